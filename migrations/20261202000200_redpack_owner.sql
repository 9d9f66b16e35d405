-- Issue 22: who may read a red packet.
--
-- A red packet is created by a finance key, but it is opened inside a client's
-- mini-program: the client backend asks `GET /v1/redpacks/{mch_billno}` for the
-- `wx.sendBizRedPacket` parameters. Until now any `client` key could read any packet (the
-- numbers are sequential; the answer carries the full openid and the signed parameters).
-- `owner_client_id` names the one client backend that may read the packet; finance gives
-- it at creation (`owner_client_id` in the request). Packets without an owner are read by
-- staff only. Staff roles (finance, approver, viewer, admin) read every packet.
ALTER TABLE redpacks ADD COLUMN owner_client_id uuid REFERENCES api_clients(id);
CREATE INDEX redpacks_owner ON redpacks (owner_client_id, id) WHERE owner_client_id IS NOT NULL;

-- Like the parameters sent to WeChat, the owner is fixed at creation (its own trigger, so
-- minipay_redpack_fixed stays as it landed).
CREATE FUNCTION minipay_redpack_owner_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.owner_client_id IS DISTINCT FROM OLD.owner_client_id THEN
        RAISE EXCEPTION 'red packet %: its owner never changes', OLD.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER redpacks_owner_fixed BEFORE UPDATE ON redpacks FOR EACH ROW EXECUTE FUNCTION minipay_redpack_owner_fixed();
