"""wechatpayv3 2.0.4 (unmodified, from PyPI) against the minipay sandbox's APIv3.

Run by tests/sdk/run_v3.sh with SANDBOX_HTTPS_URL, SANDBOX_HTTP_URL, SANDBOX_CERTS and
V3_MODE (public_key | certificate). Covers JSAPI prepay, query, close, refund + query,
payment and refund notifications through the SDK's own callback parser, trade and
fund-flow bill download with their SHA1, transfer-bill create -> confirm (the sandbox
plays the user) -> query -> notification, and cancel. The SDK's gateway is an instance
attribute fixed in its constructor, so it is pointed at the sandbox after construction;
in certificate mode the platform certificate is preloaded from --certs-dir (the SDK's
own cert_dir mechanism), because the constructor would otherwise fetch it from WeChat.
"""

import datetime
import gzip
import hashlib
import http.server
import json
import os
import shutil
import sys
import tempfile
import threading
import time

import requests
from wechatpayv3 import WeChatPay, WeChatPayType

HTTPS = os.environ["SANDBOX_HTTPS_URL"]
HTTP = os.environ["SANDBOX_HTTP_URL"]
CERTS = os.environ["SANDBOX_CERTS"]
MODE = os.environ["V3_MODE"]
MCH = "1900000109"
APPID = "wxd930ea5d5a258f4f"


def read(name):
    with open(os.path.join(CERTS, name), encoding="utf-8") as f:
        return f.read()


class Receiver(http.server.BaseHTTPRequestHandler):
    got = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.got.append((dict(self.headers.items()), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_for(n):
    for _ in range(500):
        if len(Receiver.got) >= n:
            return Receiver.got
        time.sleep(0.01)
    raise AssertionError(f"expected {n} notifications, got {len(Receiver.got)}")


def control(path, body):
    r = requests.post(HTTP + path, json=body, timeout=10)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok", MODE, what)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    notify_url = f"http://127.0.0.1:{server.server_address[1]}/notify"

    kw = dict(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=MCH,
        private_key=read("apiclient_key.pem"),
        cert_serial_no=read("apiclient_serial_no.txt").strip(),
        appid=APPID,
        apiv3_key=read("apiv3_key.txt"),
        notify_url=notify_url,
        timeout=(5, 10),
    )
    cert_dir = None
    if MODE == "public_key":
        kw.update(public_key=read("wechatpay_public_key.pem"), public_key_id=read("wechatpay_public_key_id.txt").strip())
    else:
        cert_dir = tempfile.mkdtemp()
        shutil.copy(os.path.join(CERTS, "wechatpay_platform_cert.pem"), cert_dir)
        kw.update(cert_dir=cert_dir)
    wx = WeChatPay(**kw)
    wx._core._gate_way = HTTPS

    openid = requests.get(f"{HTTP}/sandbox/openid", params={"user": "demo-user", "appid": APPID}, timeout=10).json()["openid"]
    no = f"SDK3-{MODE}"
    code, msg = wx.pay(description="SDK v3 测试", out_trade_no=no, amount={"total": 1500}, payer={"openid": openid})
    check(code == 200 and json.loads(msg)["prepay_id"].startswith("wx"), f"prepay {code} {msg}")
    code, msg = wx.query(out_trade_no=no)
    check(code == 200 and json.loads(msg)["trade_state"] == "NOTPAY", "query NOTPAY")

    control("/sandbox/pay", {"out_trade_no": no})
    headers, body = wait_for(1)[0]
    note = wx.callback(headers, body)
    check(note and note["event_type"] == "TRANSACTION.SUCCESS" and note["resource"]["out_trade_no"] == no,
          "payment notification verified and decrypted by the SDK")
    tampered = body.replace(b"TRANSACTION.SUCCESS", b"TRANSACTION.SUCCESX")
    check(wx.callback(headers, tampered) is None, "a tampered notification is refused by the SDK")
    code, msg = wx.query(out_trade_no=no)
    tx = json.loads(msg)
    check(code == 200 and tx["trade_state"] == "SUCCESS", "query SUCCESS")
    code, msg = wx.query(transaction_id=tx["transaction_id"])
    check(code == 200 and json.loads(msg)["out_trade_no"] == no, "query by transaction_id")

    code, msg = wx.refund(out_refund_no=no + "-R", amount={"refund": 500, "total": 1500, "currency": "CNY"},
                          out_trade_no=no, notify_url=notify_url)
    check(code == 200 and json.loads(msg)["status"] == "PROCESSING", f"refund {code} {msg}")
    headers, body = wait_for(2)[1]
    note = wx.callback(headers, body)
    check(note and note["event_type"] == "REFUND.SUCCESS" and note["resource"]["refund_status"] == "SUCCESS",
          "refund notification through the SDK")
    code, msg = wx.query_refund(out_refund_no=no + "-R")
    check(code == 200 and json.loads(msg)["status"] == "SUCCESS", "refund query SUCCESS")

    code, msg = wx.pay(description="to close", out_trade_no=no + "-C", amount={"total": 100}, payer={"openid": openid})
    check(code == 200, "prepay for close")
    code, msg = wx.close(out_trade_no=no + "-C")
    check(code == 204, f"close {code}")
    code, msg = wx.query(out_trade_no=no + "-C")
    check(json.loads(msg)["trade_state"] == "CLOSED", "query CLOSED")

    # Bills of today: move the sandbox clock to tomorrow 10:30 Beijing time.
    now = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8)))
    day = now.date()
    tomorrow = datetime.datetime.combine(day + datetime.timedelta(days=1), datetime.time(10, 30),
                                         tzinfo=now.tzinfo)
    control("/sandbox/clock", {"set": tomorrow.isoformat()})
    for kind, call in (("trade", lambda: wx.trade_bill(bill_date=day.isoformat())),
                       ("fund-flow", lambda: wx.fundflow_bill(bill_date=day.isoformat()))):
        code, msg = call()
        link = json.loads(msg)
        check(code == 200 and link["hash_type"] == "SHA1", f"{kind} bill link")
        code, file = wx.download_bill(link["download_url"])
        text = gzip.decompress(file)
        check(code == 200 and hashlib.sha1(text).hexdigest() == link["hash_value"], f"{kind} bill SHA1 matches")
        check(no.encode() in text or kind == "fund-flow", f"{kind} bill lists the order")
    control("/sandbox/clock", {"reset": True})

    infos = [{"info_type": "活动名称", "info_content": "新会员有礼"}, {"info_type": "奖励说明", "info_content": "注册奖励"}]
    code, msg = wx.mch_transfer_bills(out_bill_no=no + "-T1", transfer_scene_id="1000", openid=openid,
                                      transfer_amount=300, transfer_remark="活动奖励", user_recv_perception="现金奖励",
                                      transfer_scene_report_infos=infos, notify_url=notify_url)
    created = json.loads(msg)
    check(code == 200 and created["state"] == "WAIT_USER_CONFIRM" and created["package_info"], f"transfer {msg}")
    control(f"/sandbox/transfer-bills/{no}-T1/confirm", {"accept": True})
    code, msg = wx.mch_transfer_bills_query(out_bill_no=no + "-T1")
    check(code == 200 and json.loads(msg)["state"] == "SUCCESS", "transfer query SUCCESS")
    code, msg = wx.mch_transfer_bills_query(transfer_bill_no=created["transfer_bill_no"])
    check(code == 200 and json.loads(msg)["out_bill_no"] == no + "-T1", "transfer query by transfer_bill_no")
    headers, body = wait_for(3)[2]
    note = wx.callback(headers, body)
    check(note and note["event_type"] == "MCHTRANSFER.BILL.FINISHED" and note["resource"]["state"] == "SUCCESS",
          "transfer notification through the SDK")
    code, msg = wx.mch_transfer_bills(out_bill_no=no + "-T2", transfer_scene_id="1000", openid=openid,
                                      transfer_amount=200000, transfer_remark="活动奖励", user_name="张三",
                                      transfer_scene_report_infos=infos)
    check(code == 200 and json.loads(msg)["state"] == "WAIT_USER_CONFIRM", f"transfer with encrypted user_name {msg}")
    code, msg = wx.mch_transfer_bills_cancel(out_bill_no=no + "-T2")
    check(code == 200 and json.loads(msg)["state"] == "CANCELING", "transfer cancel")
    code, msg = wx.mch_transfer_bills_query(out_bill_no=no + "-T2")
    check(json.loads(msg)["state"] == "CANCELLED", "transfer CANCELLED")
    if cert_dir:
        shutil.rmtree(cert_dir)
    server.shutdown()
    print(f"wechatpayv3 {MODE}: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure fails the run
        print(f"FAILED ({MODE}): {e!r}", file=sys.stderr)
        sys.exit(1)
