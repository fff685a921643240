//! End-to-end tests: real sockets on 127.0.0.1:0, in-process upstreams, the router in-process
//! or as the real binary. One test binary, so the suite links once.

mod support;

mod access_log;
mod admin;
mod cli;
mod config_reload;
mod connections;
mod console;
mod crowding;
mod cutover;
mod deploy;
mod differential;
mod dynamo;
mod edge;
mod evacuate;
mod failover;
mod fleet;
mod flips;
mod forwarding;
mod holds;
mod http2;
mod jobs;
mod layout;
mod open_streams;
mod ramps;
mod reload;
mod routing;
mod seal;
mod shadow;
mod slow_clients;
mod store_edges;
mod streaming;
mod tls;
