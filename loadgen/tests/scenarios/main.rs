//! loadgen end to end: its accounting against a reflector that misbehaves on purpose, short
//! real runs against its embedded router, and clusters of real routers behind its proxy.

mod accounting;
mod cluster;
mod end_to_end;
