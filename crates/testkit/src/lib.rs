//! minipay testkit (being built).
