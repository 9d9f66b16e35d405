//! Payouts and red packets (`mmpaymkttransfers/*`): MD5 only, client certificate, unsigned
//! answers (WeChat does not sign these), idempotent by partner_trade_no / mch_billno.
//!
//! Rules applied, each from the merchant's configured [`crate::Limits`]: AMOUNT_LIMIT,
//! MONEY_LIMIT, SENDNUM_LIMIT, NOTENOUGH (the merchant balance), NAME_MISMATCH for
//! FORCE_CHECK against the configured real name, V2_ACCOUNT_SIMPLE_BAN for configured users
//! without a verified name, red-packet scene_id ranges, group packets split at random.

use chrono::Duration;
use rand::Rng;
use wxpay::Fen;
use wxpay::xml::{Document, Params};

use crate::clock::{bill_day, dashed};
use crate::state::{Key, RedPack, Share, State, Transfer, gen_id};
use crate::wire::{Call, Endpoint, Reply, fields, positive_fen};
use crate::{Shared, openid_for};

/// Unreceived red packets go back to the merchant after 24 hours of sandbox time.
const REDPACK_LIFETIME_HOURS: i64 = 24;

const TRANSFER_CONTENT: [&str; 7] =
    ["mch_appid", "openid", "check_name", "re_user_name", "amount", "desc", "device_info"];
const REDPACK_CONTENT: [&str; 12] = [
    "wxappid",
    "re_openid",
    "total_amount",
    "total_num",
    "amt_type",
    "send_name",
    "wishing",
    "act_name",
    "remark",
    "scene_id",
    "notify_way",
    "consume_mch_id",
];

fn content(call: &Call, names: &[&str]) -> Params {
    names.iter().filter_map(|f| call.opt(f).map(|v| ((*f).to_owned(), v.to_owned()))).collect()
}

/// Openids are short ASCII tokens; anything else is WeChat's OPENID_ERROR.
fn plausible_openid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn transfers(shared: &Shared, st: &mut State, call: &Call) -> Reply {
    let mch = &call.mch.cfg;
    let key: Key = (mch.mch_id.clone(), call.get("partner_trade_no").to_owned());
    let body = content(call, &TRANSFER_CONTENT);
    if let Some(t) = st.transfers.get(&key) {
        // Same number, same parameters: the first answer again, no second payment.
        if t.content == body {
            return Reply::Xml(t.reply.clone());
        }
        return call.err("FATAL_ERROR", "已存在该单，并且订单信息和当前传入订单信息不一致，请核查订单信息");
    }
    let amount = match positive_fen(call, "amount") {
        Ok(a) => a,
        Err(r) => return r,
    };
    let openid = call.get("openid");
    if !plausible_openid(openid) {
        return call.err("OPENID_ERROR", "Openid格式错误或者不属于商家公众账号");
    }
    if key.1.len() > 32 || !key.1.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return call.err("PARAM_ERROR", "partner_trade_no参数格式错误");
    }
    let user = shared.openids.get(openid).and_then(|u| shared.users.get(u));
    if user.is_some_and(|u| u.real_name.is_none()) {
        return call.err("V2_ACCOUNT_SIMPLE_BAN", "无法给非实名用户付款");
    }
    let check_name = call.get("check_name");
    let name_given = call.opt("re_user_name");
    match check_name {
        "NO_CHECK" => {}
        // OPTION_CHECK is the retired "check when verified" mode some SDKs still default to.
        "FORCE_CHECK" | "OPTION_CHECK" => {
            let Some(given) = name_given else {
                return call.err("PARAM_ERROR", "收款用户姓名不能为空");
            };
            let real = user.and_then(|u| u.real_name.as_deref());
            if real != Some(given) && !(check_name == "OPTION_CHECK" && user.is_none()) {
                return call.err("NAME_MISMATCH", "收款人身份校验不通过");
            }
        }
        _ => return call.err("PARAM_ERROR", "check_name参数错误"),
    }
    let lim = &mch.limits;
    if amount.get() < lim.transfer_min_fen {
        return call.err(
            "AMOUNT_LIMIT",
            &format!("付款金额不能小于最低限额{}元", Fen::new(lim.transfer_min_fen).to_yuan_string()),
        );
    }
    if amount.get() > lim.transfer_max_fen {
        return call.err("AMOUNT_LIMIT", "付款金额超出限制");
    }
    let now = st.clock.now();
    let today = bill_day(now);
    let todays = st.transfers.values().filter(|t| t.mch_id == mch.mch_id && bill_day(t.created_at) == today);
    let (mut user_count, mut user_sum, mut total) = (0u32, 0i64, 0i64);
    for t in todays {
        total += t.amount.get();
        if t.openid == openid {
            user_count += 1;
            user_sum += t.amount.get();
        }
    }
    if user_count >= lim.transfer_daily_user_count {
        return call.err("SENDNUM_LIMIT", "该用户今日付款次数超过限制,如有需要请登录微信支付商户平台更改API安全配置");
    }
    if user_sum + amount.get() > lim.transfer_daily_user_fen {
        return call.err("MONEY_LIMIT", "已达到付款给此用户额度上限");
    }
    if total + amount.get() > lim.transfer_daily_total_fen {
        return call.err("MONEY_LIMIT", "已经达到今日付款总额上限");
    }
    if st.balance(&mch.mch_id) < amount {
        return call.err("NOTENOUGH", "余额不足");
    }
    let seq = st.next_seq();
    let payment_no = gen_id("10100", now, seq, 32);
    st.book(&mch.mch_id, false, amount, &payment_no, "企业付款", "企业付款", call.get("desc"), now);
    let mut answer = fields([
        ("partner_trade_no", key.1.clone()),
        ("payment_no", payment_no.clone()),
        ("payment_time", dashed(now)),
    ]);
    if let Some(d) = call.opt("device_info") {
        answer.insert("device_info".into(), d.to_owned());
    }
    let Reply::Xml(reply) = call.ok(answer) else { unreachable!("ok() answers XML") };
    st.transfers.insert(
        key.clone(),
        Transfer {
            mch_id: key.0.clone(),
            mch_appid: call.appid.clone(),
            partner_trade_no: key.1,
            payment_no,
            openid: openid.to_owned(),
            check_name: check_name.to_owned(),
            re_user_name: name_given.unwrap_or("").to_owned(),
            amount,
            desc: call.get("desc").to_owned(),
            status: "SUCCESS".into(),
            created_at: now,
            content: body,
            reply: reply.clone(),
        },
    );
    Reply::Xml(reply)
}

pub fn gettransferinfo(st: &mut State, call: &Call) -> Reply {
    let key = (call.mch.cfg.mch_id.clone(), call.get("partner_trade_no").to_owned());
    let Some(t) = st.transfers.get(&key) else {
        return call.err("NOT_FOUND", "指定单号数据不存在");
    };
    call.ok(fields([
        ("partner_trade_no", t.partner_trade_no.clone()),
        ("detail_id", t.payment_no.clone()),
        ("status", t.status.clone()),
        ("reason", String::new()),
        ("openid", t.openid.clone()),
        ("transfer_name", t.re_user_name.clone()),
        ("payment_amount", t.amount.get().to_string()),
        ("transfer_time", dashed(t.created_at)),
        ("payment_time", dashed(t.created_at)),
        ("desc", t.desc.clone()),
    ]))
}

/// Splits `total` fen into `n` random shares of at least `min` fen each (ALL_RAND).
pub fn split_random(total: i64, n: u32, min: i64) -> Vec<i64> {
    let n = i64::from(n.max(1));
    let spare = total - n * min;
    let mut rng = rand::rng();
    let mut cuts: Vec<i64> = (0..n - 1).map(|_| rng.random_range(0..=spare.max(0))).collect();
    cuts.sort_unstable();
    let mut prev = 0;
    let mut shares = Vec::with_capacity(n as usize);
    for c in cuts.into_iter().chain(std::iter::once(spare.max(0))) {
        shares.push(min + c - prev);
        prev = c;
    }
    shares
}

pub fn sendredpack(st: &mut State, call: &Call) -> Reply {
    let mch = &call.mch.cfg;
    let key: Key = (mch.mch_id.clone(), call.get("mch_billno").to_owned());
    let body = content(call, &REDPACK_CONTENT);
    if let Some(r) = st.redpacks.get(&key) {
        if r.content == body {
            return Reply::Xml(r.reply.clone());
        }
        return call.err("FATAL_ERROR", "该单号已存在，并且订单信息和当前传入订单信息不一致");
    }
    if key.1.len() > 28 || !key.1.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return call.err("PARAM_ERROR", "mch_billno参数格式错误");
    }
    let group = call.endpoint == Endpoint::SendGroupRedPack;
    let mini = call.endpoint == Endpoint::SendMiniProgramHb;
    if call.endpoint == Endpoint::SendRedPack && call.opt("client_ip").is_none() {
        return call.err("LACK_PARAMS", "缺少参数client_ip");
    }
    let total = match positive_fen(call, "total_amount") {
        Ok(a) => a,
        Err(r) => return r,
    };
    let Ok(num) = call.get("total_num").parse::<u32>() else {
        return call.err("PARAM_ERROR", "total_num参数错误");
    };
    let lim = &mch.limits;
    if group {
        if call.get("amt_type") != "ALL_RAND" {
            return call.err("PARAM_ERROR", "amt_type参数错误，只能为ALL_RAND");
        }
        if num < 3 || num > lim.group_max_num {
            return call.err("PARAM_ERROR", &format!("裂变红包total_num必须在3到{}之间", lim.group_max_num));
        }
    } else if num != 1 {
        return call.err("PARAM_ERROR", "total_num必须为1");
    }
    if mini && call.get("notify_way") != "MINI_PROGRAM_JSAPI" {
        return call.err("PARAM_ERROR", "notify_way参数错误，只能为MINI_PROGRAM_JSAPI");
    }
    let scene = call.opt("scene_id");
    if scene.is_some_and(|s| !matches!(s.strip_prefix("PRODUCT_"), Some("1" | "2" | "3" | "4" | "5" | "6" | "7" | "8")))
    {
        return call.err("PARAM_ERROR", "scene_id参数错误");
    }
    let (lo, hi) = if scene.is_some() {
        (lim.redpack_scene_min_fen, lim.redpack_scene_max_fen)
    } else {
        (lim.redpack_min_fen, lim.redpack_max_fen)
    };
    // The range applies to each packet (the average share of a group packet).
    let per = total.get() / i64::from(num);
    if per < lo || per > hi || total.get() < lo * i64::from(num) {
        return call.err(
            "MONEY_LIMIT",
            &format!(
                "每个红包的平均金额必须在{}元到{}元之间",
                Fen::new(lo).to_yuan_string(),
                Fen::new(hi).to_yuan_string()
            ),
        );
    }
    let openid = call.get("re_openid");
    if !plausible_openid(openid) {
        return call.err("OPENID_ERROR", "openid字段不正确");
    }
    let now = st.clock.now();
    let today = bill_day(now);
    let sent_today = st
        .redpacks
        .values()
        .filter(|r| r.mch_id == mch.mch_id && r.re_openid == openid && bill_day(r.send_time) == today)
        .count();
    if sent_today >= lim.redpack_daily_user_count as usize {
        return call.err("SENDNUM_LIMIT", "该用户今日领取红包个数超过限制");
    }
    if st.balance(&mch.mch_id) < total {
        return call.err("NOTENOUGH", "帐号余额不足，请到商户平台充值后再重试");
    }
    let seq = st.next_seq();
    let send_listid = gen_id("1000041701", now, seq, 30);
    st.book(&mch.mch_id, false, total, &send_listid, "现金红包", "现金红包发放", call.get("act_name"), now);
    let amounts = if group { split_random(total.get(), num, 1) } else { vec![total.get()] };
    let shares = amounts.into_iter().map(|a| Share { openid: None, amount: Fen::new(a), rcv_time: None }).collect();
    let mut answer = fields([
        ("mch_billno", key.1.clone()),
        ("re_openid", openid.to_owned()),
        ("total_amount", total.get().to_string()),
        ("send_listid", send_listid.clone()),
    ]);
    if mini {
        answer.insert("package".into(), mini_package(&send_listid, &mch.mch_id, &call.appid));
    }
    let Reply::Xml(reply) = call.ok(answer) else { unreachable!("ok() answers XML") };
    st.redpacks.insert(
        key.clone(),
        RedPack {
            mch_id: key.0,
            wxappid: call.appid.clone(),
            mch_billno: key.1,
            send_listid,
            re_openid: openid.to_owned(),
            total_amount: total,
            total_num: num,
            hb_type: if group { "GROUP" } else { "NORMAL" }.into(),
            mini_program: mini,
            status: "SENT".into(),
            send_name: call.get("send_name").to_owned(),
            wishing: call.get("wishing").to_owned(),
            act_name: call.get("act_name").to_owned(),
            remark: call.get("remark").to_owned(),
            scene_id: scene.unwrap_or("").to_owned(),
            send_time: now,
            refund_time: None,
            refund_amount: Fen::ZERO,
            shares,
            content: body,
            reply: reply.clone(),
        },
    );
    Reply::Xml(reply)
}

/// The opaque `package` a mini-program passes to `wx.sendBizRedPacket` (guess at its shape:
/// WeChat's is a query string naming the packet, the merchant and the app).
fn mini_package(send_listid: &str, mch_id: &str, appid: &str) -> String {
    use md5::{Digest, Md5};
    let sig = hex::encode(Md5::digest(format!("{send_listid}{mch_id}{appid}").as_bytes()));
    format!("sendid={send_listid}&ver=8&sign={sig}&mchid={mch_id}&appid={appid}")
}

pub fn gethbinfo(st: &mut State, call: &Call) -> Reply {
    if call.get("bill_type") != "MCHT" {
        return call.err("PARAM_ERROR", "bill_type参数错误，只能为MCHT");
    }
    expire_due(st);
    let key = (call.mch.cfg.mch_id.clone(), call.get("mch_billno").to_owned());
    let Some(r) = st.redpacks.get(&key) else {
        return call.err("NOT_FOUND", "指定单号数据不存在");
    };
    let mut f = fields([
        ("mch_billno", r.mch_billno.clone()),
        ("detail_id", r.send_listid.clone()),
        ("status", r.status.clone()),
        ("send_type", "API".to_owned()),
        ("hb_type", r.hb_type.clone()),
        ("total_num", r.total_num.to_string()),
        ("total_amount", r.total_amount.get().to_string()),
        ("send_time", dashed(r.send_time)),
        ("wishing", r.wishing.clone()),
        ("remark", r.remark.clone()),
        ("act_name", r.act_name.clone()),
    ]);
    if let Some(t) = r.refund_time {
        f.insert("refund_time".into(), dashed(t));
        f.insert("refund_amount".into(), r.refund_amount.get().to_string());
    }
    let hblist: Vec<Params> = r
        .shares
        .iter()
        .filter_map(|s| {
            let (o, t) = (s.openid.as_ref()?, s.rcv_time?);
            Some(fields([("openid", o.clone()), ("amount", s.amount.get().to_string()), ("rcv_time", dashed(t))]))
        })
        .collect();
    let Reply::Xml(p) = call.ok(f) else { unreachable!("ok() answers XML") };
    let mut doc = Document { root: "xml".into(), fields: p, lists: Default::default() };
    if !hblist.is_empty() {
        doc.lists.insert("hblist".into(), hblist);
    }
    Reply::Document(doc)
}

/// Expires every red packet whose 24 hours have passed on the sandbox clock.
pub fn expire_due(st: &mut State) {
    let now = st.clock.now();
    let due: Vec<Key> = st
        .redpacks
        .iter()
        .filter(|(_, r)| r.status == "SENT" && r.send_time + Duration::hours(REDPACK_LIFETIME_HOURS) <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in due {
        let _ = expire_redpack(st, &k, false);
    }
}

/// Sends the unreceived money back to the merchant (status REFUND).
pub fn expire_redpack(st: &mut State, key: &Key, force: bool) -> Result<RedPack, &'static str> {
    let now = st.clock.now();
    let r = st.redpacks.get_mut(key).ok_or("no such red packet")?;
    if r.status != "SENT" {
        return Err("red packet is not waiting to be received");
    }
    if !force && r.send_time + Duration::hours(REDPACK_LIFETIME_HOURS) > now {
        return Err("red packet has not expired yet");
    }
    let left: i64 = r.shares.iter().filter(|s| s.rcv_time.is_none()).map(|s| s.amount.get()).sum();
    // Expiry noticed late (the clock was moved) still happened 24 hours after sending.
    let at = if force { now } else { r.send_time + Duration::hours(REDPACK_LIFETIME_HOURS) };
    r.status = "REFUND".into();
    r.refund_time = Some(at);
    r.refund_amount = Fen::new(left);
    let (mch, listid, remark) = (r.mch_id.clone(), r.send_listid.clone(), r.act_name.clone());
    let r = r.clone();
    st.book(&mch, true, Fen::new(left), &listid, "现金红包", "现金红包退款", &remark, at);
    Ok(r)
}

/// A user opens a red packet (or takes the next share of a group packet); RECEIVED once all
/// shares are taken. The default receiver is `re_openid`, then made-up friends for groups.
pub fn open_redpack(st: &mut State, key: &Key, openid: Option<&str>) -> Result<RedPack, &'static str> {
    expire_due(st);
    let now = st.clock.now();
    let r = st.redpacks.get_mut(key).ok_or("no such red packet")?;
    if r.status != "SENT" {
        return Err("red packet is not waiting to be received");
    }
    let taken = r.shares.iter().filter(|s| s.openid.is_some()).count();
    let who = match openid {
        Some(o) => o.to_owned(),
        None if taken == 0 => r.re_openid.clone(),
        None => openid_for(&format!("friend-{taken}-of-{}", r.re_openid), &r.wxappid),
    };
    if r.shares.iter().any(|s| s.openid.as_deref() == Some(who.as_str())) {
        return Err("this user already took a share");
    }
    let share = r.shares.iter_mut().find(|s| s.openid.is_none()).ok_or("no share left")?;
    share.openid = Some(who);
    share.rcv_time = Some(now);
    if r.shares.iter().all(|s| s.openid.is_some()) {
        r.status = "RECEIVED".into();
    }
    Ok(r.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_split_sums_and_respects_minimum() {
        for _ in 0..200 {
            let s = split_random(1000, 7, 100);
            assert_eq!(s.len(), 7);
            assert_eq!(s.iter().sum::<i64>(), 1000);
            assert!(s.iter().all(|&x| x >= 100));
        }
        assert_eq!(split_random(300, 3, 100), vec![100, 100, 100]);
    }
}
