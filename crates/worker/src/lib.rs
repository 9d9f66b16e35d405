//! minipay worker (being built).
