-- WeChat Pay platform certificates of APIv3 merchants in certificate (or switching) mode,
-- shared by every replica: one process fetches /v3/certificates (verified against the
-- answer's own signature), stores what it adopted here, and the others load from here
-- before asking WeChat about a serial they do not know. Certificates are public; the row
-- is kept until it expires (WeChat issues them for five years and overlaps old and new
-- during a rotation).
CREATE TABLE wechatpay_platform_certificates (
    mch_id      text NOT NULL,
    serial_no   text NOT NULL,
    pem         text NOT NULL,
    not_before  timestamptz NOT NULL,
    not_after   timestamptz NOT NULL,
    fetched_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mch_id, serial_no),
    CHECK (not_before < not_after)
);
