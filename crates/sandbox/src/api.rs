//! Routes a verified call to its endpoint's business logic.

use crate::state::State;
use crate::wire::{Call, ENDPOINTS, Endpoint, Reply};
use crate::{Effects, Shared};

pub fn dispatch(shared: &Shared, st: &mut State, fx: &mut Effects, call: &Call) -> Reply {
    match call.endpoint {
        Endpoint::UnifiedOrder => crate::pay::unifiedorder(st, call),
        Endpoint::OrderQuery => crate::pay::orderquery(st, call),
        Endpoint::CloseOrder => crate::pay::closeorder(st, call),
        Endpoint::Refund => crate::pay::refund(shared, st, fx, call),
        Endpoint::RefundQuery => crate::pay::refundquery(shared, st, fx, call),
        Endpoint::DownloadBill => crate::bills::downloadbill(st, call),
        Endpoint::DownloadFundFlow => crate::bills::downloadfundflow(st, call),
        Endpoint::Transfers => crate::mkt::transfers(shared, st, call),
        Endpoint::GetTransferInfo => crate::mkt::gettransferinfo(st, call),
        Endpoint::SendRedPack | Endpoint::SendGroupRedPack | Endpoint::SendMiniProgramHb => {
            crate::mkt::sendredpack(st, call)
        }
        Endpoint::GetHbInfo => crate::mkt::gethbinfo(st, call),
    }
}

/// Whether a fault may name this path: a WeChat Pay endpoint or a WeChat API path.
pub fn known_path(path: &str) -> bool {
    ENDPOINTS.iter().any(|e| e.path() == path)
        || crate::weixin::PATHS.contains(&path)
        || crate::v3::FAULT_PATHS.contains(&path)
}
