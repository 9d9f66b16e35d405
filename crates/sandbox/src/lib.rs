//! minipay sandbox (being built).
