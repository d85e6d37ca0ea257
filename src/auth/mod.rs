//! Password authentication, both directions: warpdrive verifying its clients and
//! warpdrive proving itself to origins. Pure computation: the session and the backend
//! carry the messages.

pub mod md5;
pub mod mysql;
pub mod scram;
