//! Who is calling: the TLS listener, the principal resolved from the client certificate, and
//! certificate revocation.

pub mod pki;
pub mod principal;
pub mod rate;
pub mod revocation;
pub mod tls;
