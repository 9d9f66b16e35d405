"""Drive the minipay sandbox with wechatpy, a mainstream third-party WeChat Pay SDK
installed unmodified from PyPI. Only configuration points it at the sandbox: the
instance's API_BASE_URL, the written-out client certificate and key, and the sandbox CA
through REQUESTS_CA_BUNDLE.

Covers: create, query and close orders; the payment notification verified by wechatpy;
a refund with the client certificate (and refused without it) and its encrypted
notification decrypted by wechatpy; a bill downloaded and parsed; a payout to balance;
a red packet and its query. Exits non-zero on the first failure.

Environment: SANDBOX_HTTP_URL, SANDBOX_HTTPS_URL, SANDBOX_CERTS (the --certs-dir),
REQUESTS_CA_BUNDLE (= $SANDBOX_CERTS/ca.pem).
"""

import http.server
import os
import queue
import sys
import threading
import time

import requests
from wechatpy.exceptions import WeChatPayException
from wechatpy.pay import WeChatPay

HTTP = os.environ["SANDBOX_HTTP_URL"]
HTTPS = os.environ["SANDBOX_HTTPS_URL"]
CERTS = os.environ["SANDBOX_CERTS"]
MCH_ID = "1900000109"
APPID = "wxd930ea5d5a258f4f"
API_KEY = "192006250b4c09247ec02edce69f6a2d"  # the sandbox's public demo key (test only)

checks = 0


def check(cond, what):
    global checks
    if not cond:
        raise AssertionError(what)
    checks += 1
    print("ok", what)


def control(path, body=None):
    if body is None:
        r = requests.get(HTTP + path, timeout=10)
    else:
        r = requests.post(HTTP + path, json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def client(with_cert=True):
    kwargs = {}
    if with_cert:
        kwargs = {
            "mch_cert": os.path.join(CERTS, "apiclient_cert.pem"),
            "mch_key": os.path.join(CERTS, "apiclient_key.pem"),
        }
    pay = WeChatPay(appid=APPID, api_key=API_KEY, mch_id=MCH_ID, timeout=15, **kwargs)
    pay.API_BASE_URL = HTTPS + "/"  # configuration: the class default is WeChat's host
    return pay


class Receiver(http.server.BaseHTTPRequestHandler):
    """Receives notifications and answers SUCCESS."""

    got = queue.Queue()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.got.put(body.decode("utf-8"))
        reply = b"<xml><return_code><![CDATA[SUCCESS]]></return_code><return_msg><![CDATA[OK]]></return_msg></xml>"
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def start_receiver():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return "http://127.0.0.1:%d/notify" % srv.server_address[1]


def parse_bill(text):
    """WeChat's bill text: header, backtick rows split on ',`', summary header and line."""
    lines = [l for l in text.replace("\r\n", "\n").split("\n") if l]
    header = lines[0].split(",")
    fields = lambda line: line[1:].split(",`")  # every field starts with a backtick
    rows = [dict(zip(header, fields(l))) for l in lines[1:-2]]
    summary = dict(zip(lines[-2].split(","), fields(lines[-1])))
    return header, rows, summary


def main():
    pay = client()
    notify_url = start_receiver()
    suffix = str(int(time.time() * 1000))
    openid = control("/sandbox/openid?user=demo-user&appid=" + APPID)["openid"]

    # Create, check the answer's signature with wechatpy, query, pay, query.
    no = "SDK" + suffix
    created = pay.order.create(
        trade_type="JSAPI", body="SDK 测试", total_fee=888, notify_url=notify_url,
        client_ip="127.0.0.1", user_id=openid, out_trade_no=no, attach="a,b",
    )
    check(created["result_code"] == "SUCCESS" and created["prepay_id"].startswith("wx"), "unifiedorder")
    check(pay.check_signature(dict(created)), "unifiedorder answer signature verified by wechatpy")
    jsapi = pay.jsapi.get_jsapi_params(created["prepay_id"])
    check(jsapi["package"] == "prepay_id=" + created["prepay_id"], "wx.requestPayment params")
    check(pay.order.query(out_trade_no=no)["trade_state"] == "NOTPAY", "orderquery NOTPAY")
    control("/sandbox/pay", {"prepay_id": created["prepay_id"]})
    paid = pay.order.query(out_trade_no=no)
    check(paid["trade_state"] == "SUCCESS" and paid["total_fee"] == "888", "orderquery SUCCESS after paying")

    note = Receiver.got.get(timeout=20)
    result = pay.parse_payment_result(note)  # raises on a bad signature
    check(result["out_trade_no"] == no and result["total_fee"] == 888, "payment notification verified by wechatpy")

    # Close another order.
    other = "SDKC" + suffix
    pay.order.create(trade_type="JSAPI", body="close me", total_fee=100, notify_url=notify_url,
                     client_ip="127.0.0.1", user_id=openid, out_trade_no=other)
    check(pay.order.close(other)["result_code"] == "SUCCESS", "closeorder")
    check(pay.order.query(out_trade_no=other)["trade_state"] == "CLOSED", "orderquery CLOSED")

    # Refund: refused without the client certificate, accepted with it.
    try:
        client(with_cert=False).refund.apply(888, 100, "R" + suffix, out_trade_no=no)
        check(False, "refund without certificate must fail")
    except WeChatPayException as e:
        check(e.return_code == "FAIL", "refund without certificate refused: %s" % e.return_msg)
    refund = pay.refund.apply(888, 300, "R" + suffix, out_trade_no=no, notify_url=notify_url)
    check(refund["result_code"] == "SUCCESS" and refund["refund_fee"] == "300", "refund with client certificate")
    rnote = pay.parse_refund_notify_result(Receiver.got.get(timeout=20))
    check(rnote["out_refund_no"] == "R" + suffix and rnote["refund_status"] == "SUCCESS" and rnote["refund_fee"] == 300,
          "refund notification decrypted by wechatpy")
    rq = pay.refund.query(out_refund_no="R" + suffix)
    check(rq["refund_status_0"] == "SUCCESS", "refundquery SUCCESS")

    # Payout to balance and a red packet (certificate endpoints).
    t = pay.transfer.transfer(openid, 150, "SDK payout", client_ip="127.0.0.1", check_name="FORCE_CHECK",
                              real_name="张三", out_trade_no="SDKT" + suffix)
    check(t["result_code"] == "SUCCESS" and t["payment_no"], "payout to balance")
    check(pay.transfer.query("SDKT" + suffix)["status"] == "SUCCESS", "gettransferinfo")
    rp = pay.redpack.send(openid, 200, "minipay", "sdk test", "恭喜发财", "remark", client_ip="127.0.0.1")
    check(rp["result_code"] == "SUCCESS" and rp["send_listid"], "sendredpack")
    check(pay.redpack.query(rp["mch_billno"])["status"] == "SENT", "gethbinfo")

    # Bill: tomorrow 10:30 Beijing on the sandbox clock, then download the payment's day.
    day = paid["time_end"][:8]
    control("/sandbox/clock", {"set": "%s-%s-%s 10:30:00" % (day[:4], day[4:6], day[6:])})
    control("/sandbox/clock", {"advance_secs": 86400})
    text = pay.tools.download_bill(day, bill_type="ALL")
    check(isinstance(text, str) and not text.startswith("<"), "downloadbill returns the bill text")
    header, rows, summary = parse_bill(text)
    check(len(header) == 27 and header[6] == "商户订单号", "bill header has WeChat's 27 columns")
    mine = [r for r in rows if r["商户订单号"] == no]
    check(any(r["交易状态"] == "SUCCESS" and r["应结订单金额"] == "8.88" for r in mine), "paid order in the bill")
    check(any(r["交易状态"] == "REFUND" and r["退款金额"] == "3.00" for r in mine), "refund in the bill")
    check(any(r["商户数据包"] == "a,b" for r in mine), "attach with a comma survives")
    check(int(summary["总交易单数"]) == len(rows), "summary count matches the rows")
    print("%d passed, 0 failed" % checks)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report any failure as one failed check
        print("FAILED:", repr(e))
        print("%d passed, 1 failed" % checks)
        sys.exit(1)
