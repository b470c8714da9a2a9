//! Black-box tests, in one binary: each starts the real proxy on `127.0.0.1:0` in front of a
//! fake origin on loopback (or the real binary, for the CLI and lifecycle), and speaks to it as
//! a client would, over TLS and plaintext, HTTP/1.1 and HTTP/2.

mod common;

mod auth;
mod browser;
mod cli;
mod cluster;
mod demo;
mod edge_http;
mod fast_path_h2_origin;
mod fast_path_parser;
mod fast_path_passthrough;
mod h1_fast_path;
mod h2_limits;
mod hostile;
mod hub;
mod layers;
mod lifecycle;
mod load;
mod origin_faults;
mod passthrough;
mod passthrough_hardening;
mod probe;
mod properties;
mod refusals;
mod resume;
mod scenarios;
mod serving_threads;
mod streams;
