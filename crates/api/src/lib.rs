//! minipay api (being built).
