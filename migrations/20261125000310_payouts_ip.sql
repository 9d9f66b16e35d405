-- Transfers carry spbill_create_ip (the calling machine's address; WeChat lists it as
-- required). Like every parameter sent, it is fixed when the payout is created so a retry
-- repeats exactly the same request.
ALTER TABLE payouts ADD COLUMN spbill_create_ip text;

CREATE OR REPLACE FUNCTION minipay_payout_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.partner_trade_no, NEW.mch_id, NEW.appid, NEW.openid, NEW.amount, NEW.description,
        NEW.check_name, NEW.re_user_name, NEW.created_by, NEW.spbill_create_ip)
       IS DISTINCT FROM
       (OLD.partner_trade_no, OLD.mch_id, OLD.appid, OLD.openid, OLD.amount, OLD.description,
        OLD.check_name, OLD.re_user_name, OLD.created_by, OLD.spbill_create_ip) THEN
        RAISE EXCEPTION 'payout %: the merchant number and the parameters sent to WeChat never change', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
