//! minipay notify (being built).
