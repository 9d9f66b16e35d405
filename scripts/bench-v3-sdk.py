"""The same three APIv3 operations as `cargo bench -p wxpay --bench v3`, timed with the
wechatpayv3 2.0.4 SDK (PyPI, unmodified), for docs/PERFORMANCE.md ("Wire, v3"):

1. request sign: the JSAPI prepay request's Authorization header (SHA256withRSA-2048);
2. answer verify: RSA verify of a query answer over timestamp, nonce and body;
3. notification verify + decrypt: the SDK's own callback parser on a TRANSACTION.SUCCESS
   notification (signature, AES-256-GCM, JSON).

Same bodies and key sizes as the Rust bench. Keys are generated on the spot; nothing
touches the network (the SDK is built in public-key mode, which fetches nothing).
Prints one line per operation: median and mean microseconds over N runs.
"""

import base64
import json
import os
import statistics
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import build_authorization, rsa_sign, rsa_verify

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
MCHID = "1900000001"
SERIAL = "3775B6A45ACD588826D15E583A95F5DD2B3B2C6F"
PUB_KEY_ID = "PUB_KEY_ID_0117000800002025045698789500001779"
APIV3_KEY = "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb"
PREPAY = '{"appid":"wxd678efh567hg6787","mchid":"1900000001","description":"咖啡, 大杯","out_trade_no":"MP20261125000001","notify_url":"https://pay.example.com/notify/wxpay/v3","amount":{"total":2500,"currency":"CNY"},"payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"}}'
ANSWER = '{"appid":"wxd678efh567hg6787","mchid":"1900000001","out_trade_no":"MP20261125000001","transaction_id":"4200000015202611256947025404","trade_state":"SUCCESS","amount":{"total":2500,"payer_total":2500}}'
PAYMENT = '{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"MP20261125000001","transaction_id":"4200000015202611256947025404","trade_type":"JSAPI","trade_state":"SUCCESS","trade_state_desc":"支付成功","bank_type":"CMC","attach":"order=MP20261125000001","success_time":"2026-11-25T13:15:40+08:00","payer":{"openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},"amount":{"total":2500,"payer_total":2500,"currency":"CNY","payer_currency":"CNY"}}'


def pem_private(k):
    return k.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_public(k):
    return k.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def timed(name, fn):
    for _ in range(min(200, N)):
        fn()
    runs = []
    for _ in range(N):
        t = time.perf_counter_ns()
        fn()
        runs.append((time.perf_counter_ns() - t) / 1000)
    print(f"{name}: median {statistics.median(runs):.1f} µs, mean {statistics.fmean(runs):.1f} µs ({N} runs)")


def main():
    merchant = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wechat = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pay = WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=MCHID,
        private_key=pem_private(merchant),
        cert_serial_no=SERIAL,
        appid="wxd678efh567hg6787",
        apiv3_key=APIV3_KEY,
        public_key=pem_public(wechat),
        public_key_id=PUB_KEY_ID,
    )

    timed("v3 request sign (JSAPI prepay)",
          lambda: build_authorization("/v3/pay/transactions/jsapi", "POST", MCHID, SERIAL, merchant, PREPAY,
                                      "593BEC0C930BF1AFEB40B4A08C8FB242"))

    now = str(int(time.time()))
    nonce = "c5ac7061fccab6bf3e254dcf98995b8c"
    sig = rsa_sign(wechat, f"{now}\n{nonce}\n{ANSWER}\n")
    public = wechat.public_key()
    assert rsa_verify(now, nonce, ANSWER, sig, public)
    timed("v3 answer verify (query answer)", lambda: rsa_verify(now, nonce, ANSWER, sig, public))

    gcm_nonce = "fdasflkja484"
    ct = AESGCM(APIV3_KEY.encode()).encrypt(gcm_nonce.encode(), PAYMENT.encode(), b"transaction")
    body = json.dumps({
        "id": "EV-2018022511223320873", "create_time": "2026-11-25T13:15:41+08:00",
        "event_type": "TRANSACTION.SUCCESS", "resource_type": "encrypt-resource", "summary": "支付成功",
        "resource": {"algorithm": "AEAD_AES_256_GCM", "ciphertext": base64.b64encode(ct).decode(),
                     "nonce": gcm_nonce, "associated_data": "transaction", "original_type": "transaction"},
    }, ensure_ascii=False)
    nnonce = "n0t1f1cat10n"
    headers = {
        "Wechatpay-Timestamp": now, "Wechatpay-Nonce": nnonce, "Wechatpay-Serial": PUB_KEY_ID,
        "Wechatpay-Signature": rsa_sign(wechat, f"{now}\n{nnonce}\n{body}\n"),
        "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
    }
    got = pay.callback(headers, body)
    assert got and got["resource"]["out_trade_no"] == "MP20261125000001", got
    timed("v3 notification verify + decrypt (payment)", lambda: pay.callback(headers, body))


if __name__ == "__main__":
    os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
    main()
