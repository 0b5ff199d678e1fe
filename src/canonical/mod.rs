//! One reading of a request for routing, permission and forwarding.
//!
//! The gateway matches routes on the raw path and forwards that same path, byte for byte. That is
//! only safe if no hop after it can read the path differently: so a path any normaliser would
//! rewrite (a dot-segment in any disguise, an encoded separator or `;`, an empty segment, an
//! encoded letter, anything but valid UTF-8, raw bytes outside ASCII) is refused before routing.
//! Douyin's API paths never contain any of these.
//!
//! Names are compared the way lenient servers read them: a query parameter `access[token` or
//! `accessToken`, or a header `X_Access.Token`, is the credential to PHP, Rack, Spring or nginx,
//! so it is one to the gateway too. The rule is a name's *skeleton*: its ASCII letters and digits,
//! lower-cased, after decoding (see [`field_is`] and [`header_named`]).

mod names;
mod path;

pub use names::{
    cookie_is, field_is, header_is, header_named, header_skeleton, normalize_param_name, param_is, pieces, skeleton,
    ACCESS_TOKEN,
};
pub use path::path_problem;
