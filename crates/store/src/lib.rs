//! minipay store (being built).
