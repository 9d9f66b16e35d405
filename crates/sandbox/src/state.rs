//! What the sandbox holds: orders, refunds, payouts, red packets, notifications, the fund
//! flow, login codes, tokens and messages. One `State` behind one lock: it is a simulator,
//! handlers are short and never hold the lock across an `.await`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use wxpay::xml::Params;
use wxpay::{Fen, SignType};

use crate::clock::Clock;
use crate::faults::Faults;

/// WeChat's trade_state values the sandbox produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TradeState {
    Notpay,
    Success,
    Refund,
    Closed,
    Payerror,
}

impl TradeState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradeState::Notpay => "NOTPAY",
            TradeState::Success => "SUCCESS",
            TradeState::Refund => "REFUND",
            TradeState::Closed => "CLOSED",
            TradeState::Payerror => "PAYERROR",
        }
    }

    /// WeChat's trade_state_desc wording.
    pub fn desc(self) -> &'static str {
        match self {
            TradeState::Notpay => "订单未支付",
            TradeState::Success => "支付成功",
            TradeState::Refund => "订单发生过退款，退款详情请查询退款单",
            TradeState::Closed => "订单已关闭",
            TradeState::Payerror => "支付失败，请重新下单支付",
        }
    }
}

/// A payment order created by `pay/unifiedorder`.
#[derive(Debug, Clone, Serialize)]
pub struct Order {
    pub mch_id: String,
    pub appid: String,
    pub out_trade_no: String,
    pub prepay_id: String,
    pub prepay_expires_at: DateTime<Utc>,
    pub transaction_id: Option<String>,
    pub body: String,
    pub attach: String,
    pub total_fee: Fen,
    pub openid: String,
    pub notify_url: String,
    pub trade_type: String,
    #[serde(serialize_with = "ser_sign_type")]
    pub sign_type: SignType,
    pub state: TradeState,
    pub created_at: DateTime<Utc>,
    pub paid_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub time_expire: Option<DateTime<Utc>>,
    pub bank_type: String,
    pub refunded: Fen,
    /// Created over APIv3 (`/v3/pay/transactions/jsapi`): its notification is a v3 one.
    pub v3: bool,
    /// The fields whose change makes a repeated out_trade_no OUT_TRADE_NO_USED.
    #[serde(skip)]
    pub content: Params,
}

fn ser_sign_type<S: serde::Serializer>(t: &SignType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.as_str())
}

/// WeChat's refund_status values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Processing,
    Success,
    Change,
    Refundclose,
}

impl RefundStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RefundStatus::Processing => "PROCESSING",
            RefundStatus::Success => "SUCCESS",
            RefundStatus::Change => "CHANGE",
            RefundStatus::Refundclose => "REFUNDCLOSE",
        }
    }
}

/// A refund created by `secapi/pay/refund`.
#[derive(Debug, Clone, Serialize)]
pub struct Refund {
    pub mch_id: String,
    pub appid: String,
    pub out_trade_no: String,
    pub transaction_id: String,
    pub out_refund_no: String,
    pub refund_id: String,
    pub total_fee: Fen,
    pub refund_fee: Fen,
    pub refund_desc: String,
    pub notify_url: Option<String>,
    pub status: RefundStatus,
    pub created_at: DateTime<Utc>,
    /// Sandbox time from which the refund counts as done.
    pub settle_due: DateTime<Utc>,
    pub success_at: Option<DateTime<Utc>>,
    /// Created over APIv3 (`/v3/refund/domestic/refunds`): its notification is a v3 one.
    pub v3: bool,
}

/// A payout to a user's balance (`mmpaymkttransfers/promotion/transfers`).
#[derive(Debug, Clone, Serialize)]
pub struct Transfer {
    pub mch_id: String,
    pub mch_appid: String,
    pub partner_trade_no: String,
    pub payment_no: String,
    pub openid: String,
    pub check_name: String,
    pub re_user_name: String,
    pub amount: Fen,
    pub desc: String,
    pub status: String,
    pub created_at: DateTime<Utc>,
    #[serde(skip)]
    pub content: Params,
    /// The answer given the first time: a repeat with the same parameters gets it again.
    #[serde(skip)]
    pub reply: Params,
}

/// One share of a red packet.
#[derive(Debug, Clone, Serialize)]
pub struct Share {
    pub openid: Option<String>,
    pub amount: Fen,
    pub rcv_time: Option<DateTime<Utc>>,
}

/// A red packet (normal, group or mini-program).
#[derive(Debug, Clone, Serialize)]
pub struct RedPack {
    pub mch_id: String,
    pub wxappid: String,
    pub mch_billno: String,
    pub send_listid: String,
    pub re_openid: String,
    pub total_amount: Fen,
    pub total_num: u32,
    /// `NORMAL` or `GROUP` (WeChat's hb_type); mini-program packets are NORMAL.
    pub hb_type: String,
    pub mini_program: bool,
    /// SENT, RECEIVED or REFUND.
    pub status: String,
    pub send_name: String,
    pub wishing: String,
    pub act_name: String,
    pub remark: String,
    pub scene_id: String,
    pub send_time: DateTime<Utc>,
    pub refund_time: Option<DateTime<Utc>>,
    pub refund_amount: Fen,
    pub shares: Vec<Share>,
    #[serde(skip)]
    pub content: Params,
    #[serde(skip)]
    pub reply: Params,
}

/// One delivery attempt of a notification.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at: DateTime<Utc>,
    pub http_status: Option<u16>,
    /// The first 200 characters of the reply.
    pub reply_excerpt: String,
    pub error: Option<String>,
    /// A fault that shaped this attempt (`drop`, `duplicate`, `delay`, `reorder`).
    pub fault: Option<String>,
    pub success: bool,
}

/// A payment or refund notification and its attempts.
#[derive(Debug, Clone, Serialize)]
pub struct Notification {
    pub id: u64,
    /// `pay`, `refund` or `transfer`.
    pub kind: String,
    /// An APIv3 notification: a JSON envelope, signed per attempt with `Wechatpay-*`
    /// headers, acknowledged by HTTP 200 or 204.
    pub v3: bool,
    pub mch_id: String,
    pub out_trade_no: String,
    pub out_refund_no: Option<String>,
    pub url: String,
    /// `pending`, `delivered` or `gave_up`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub body: String,
    pub attempts: Vec<Attempt>,
}

/// One fund-flow entry on a merchant's basic account.
#[derive(Debug, Clone, Serialize)]
pub struct FundEntry {
    pub mch_id: String,
    pub at: DateTime<Utc>,
    pub biz_no: String,
    pub flow_no: String,
    pub biz_name: String,
    pub biz_type: String,
    pub income: bool,
    pub amount: Fen,
    pub balance_after: Fen,
    pub applicant: String,
    pub remark: String,
    pub voucher: String,
}

/// A login code minted through `/sandbox/jscode`.
#[derive(Debug, Clone)]
pub struct LoginCode {
    pub user: String,
    pub appid: String,
    pub created_at: DateTime<Utc>,
    pub used: bool,
}

/// An access token issued by `cgi-bin/token`.
#[derive(Debug, Clone)]
pub struct Token {
    pub appid: String,
    pub expires_at: DateTime<Utc>,
    pub invalidated: bool,
}

/// A customer-service message received by `cgi-bin/message/custom/send`.
#[derive(Debug, Clone, Serialize)]
pub struct Message {
    pub appid: String,
    pub at: DateTime<Utc>,
    pub touser: String,
    pub msgtype: String,
    pub body: serde_json::Value,
}

/// A v3 transfer bill (商家转账). `state` is WeChat's: WAIT_USER_CONFIRM, SUCCESS, FAIL,
/// CANCELLED.
#[derive(Debug, Clone, Serialize)]
pub struct TransferBill {
    pub mch_id: String,
    pub appid: String,
    pub out_bill_no: String,
    pub transfer_bill_no: String,
    pub transfer_scene_id: String,
    pub openid: String,
    pub transfer_amount: Fen,
    pub transfer_remark: String,
    pub notify_url: Option<String>,
    /// The OAEP ciphertext as sent (WeChat echoes it in queries).
    pub user_name: Option<String>,
    /// The decrypted real name, checked against the user's when the bill is confirmed.
    #[serde(skip)]
    pub user_name_plain: Option<String>,
    pub state: String,
    pub fail_reason: Option<String>,
    pub package_info: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Unconfirmed after this sandbox time, the bill is CANCELLED.
    pub confirm_by: DateTime<Utc>,
    /// The request fields whose change makes a repeated out_bill_no a different bill.
    #[serde(skip)]
    pub content: serde_json::Value,
}

/// A v3 bill file, built when its link was asked for (so the hash given then matches).
#[derive(Debug, Clone)]
pub struct BillFile {
    pub mch_id: String,
    /// The bytes served: the bill text, gzipped when the link asked for GZIP.
    pub file: Vec<u8>,
    pub expires_at: DateTime<Utc>,
}

/// Key of per-merchant records: (mch_id, merchant's number).
pub type Key = (String, String);

/// All mutable sandbox state.
#[derive(Debug, Default)]
pub struct State {
    pub clock: Clock,
    pub balances: BTreeMap<String, Fen>,
    pub orders: BTreeMap<Key, Order>,
    pub by_prepay: HashMap<String, Key>,
    pub by_transaction: HashMap<String, Key>,
    pub refunds: BTreeMap<Key, Refund>,
    pub by_refund_id: HashMap<String, Key>,
    pub transfers: BTreeMap<Key, Transfer>,
    pub redpacks: BTreeMap<Key, RedPack>,
    pub notifications: Vec<Notification>,
    pub fund: Vec<FundEntry>,
    pub faults: Faults,
    pub codes: HashMap<String, LoginCode>,
    pub tokens: HashMap<String, Token>,
    pub messages: Vec<Message>,
    /// v3 transfer bills (商家转账) by (mch_id, out_bill_no).
    pub transfer_bills: BTreeMap<Key, TransferBill>,
    pub by_transfer_bill_no: HashMap<String, Key>,
    /// Transfer-bill calls per merchant in the current real second: (second, count).
    pub transfer_rate: HashMap<String, (i64, u32)>,
    /// v3 bill files behind their `download_url` tokens.
    pub bill_files: HashMap<String, BillFile>,
    /// Issue 18: the stable access token per app (`cgi-bin/stable_token`).
    pub stable: HashMap<String, crate::platform::StableSlot>,
    /// Every stable_token call, for tests counting upstream calls.
    pub stable_calls: Vec<crate::platform::StableCall>,
    /// getPhoneNumber codes minted through `/sandbox/phonecode`.
    pub phone_codes: HashMap<String, crate::platform::PhoneCode>,
    /// Temporary media (`cgi-bin/media/upload`) by media_id.
    pub media: HashMap<String, crate::platform::Media>,
    /// openid → (user, appid) for users met through codes and pushes.
    pub known_openids: HashMap<String, (String, String)>,
    /// The customer-service window per (appid, openid).
    pub cs_windows: HashMap<(String, String), crate::platform::CsWindow>,
    /// 消息推送 settings per app, as saved in the console (`/sandbox/cs/push-config`).
    pub push_settings: HashMap<String, crate::platform::PushSettings>,
    /// Every push made, with its delivery attempts.
    pub pushes: Vec<crate::platform::PushRecord>,
    seq: u64,
}

impl State {
    /// Stores a new order and indexes it by its prepay_id (v2 unifiedorder and v3 JSAPI
    /// prepay create orders the same way).
    pub fn insert_order(&mut self, key: Key, order: Order) {
        self.by_prepay.insert(order.prepay_id.clone(), key.clone());
        self.orders.insert(key, order);
    }

    /// A number unique within this sandbox run, used inside generated ids.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn balance(&self, mch_id: &str) -> Fen {
        self.balances.get(mch_id).copied().unwrap_or(Fen::ZERO)
    }

    /// Moves money on a merchant's basic account and records the fund-flow entry.
    #[allow(clippy::too_many_arguments)]
    pub fn book(
        &mut self,
        mch_id: &str,
        income: bool,
        amount: Fen,
        biz_no: &str,
        biz_name: &str,
        biz_type: &str,
        remark: &str,
        at: DateTime<Utc>,
    ) {
        let bal = self.balance(mch_id);
        let after = if income { bal.get() + amount.get() } else { bal.get() - amount.get() };
        self.balances.insert(mch_id.to_owned(), Fen::new(after));
        let seq = self.next_seq();
        let flow_no = format!("{}{:010}", crate::clock::compact(at), seq);
        self.fund.push(FundEntry {
            mch_id: mch_id.to_owned(),
            at,
            biz_no: biz_no.to_owned(),
            flow_no,
            biz_name: biz_name.to_owned(),
            biz_type: biz_type.to_owned(),
            income,
            amount,
            balance_after: Fen::new(after),
            applicant: if income { "system".into() } else { mch_id.to_owned() },
            remark: remark.to_owned(),
            voucher: biz_no.to_owned(),
        });
    }

    /// Settles refunds whose processing time has passed on the sandbox clock; returns the
    /// keys that changed (their notifications are then due).
    pub fn settle_due_refunds(&mut self) -> Vec<Key> {
        let now = self.clock.now();
        let due: Vec<Key> = self
            .refunds
            .iter()
            .filter(|(_, r)| r.status == RefundStatus::Processing && r.settle_due <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            if let Some(r) = self.refunds.get_mut(k) {
                r.status = RefundStatus::Success;
                r.success_at = Some(now);
            }
        }
        due
    }
}

/// Generates WeChat-looking ids: digits (or `wx` + digits for prepay ids) with the Beijing
/// date in them, as WeChat's have, unique by the run's sequence number plus randomness.
pub fn gen_id(prefix: &str, at: DateTime<Utc>, seq: u64, len: usize) -> String {
    use rand::Rng;
    let mut s = format!("{prefix}{}{:06}", crate::clock::compact(at), seq % 1_000_000);
    let mut rng = rand::rng();
    while s.len() < len {
        s.push(char::from(b'0' + rng.random_range(0..10u8)));
    }
    s.truncate(len);
    s
}

/// A random nonce for signed answers and notifications.
pub fn nonce() -> String {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    rand::rng().sample_iter(&Alphanumeric).take(32).map(char::from).collect()
}
