//! The end-to-end tests, built as one binary: wasmtime, rdkafka and fjall are linked once
//! instead of once per test file (as wasmtime's own `tests/all` does). Run one group with
//! `cargo test -p weir --test all kafka::`.

mod common;

mod admin;
mod capture;
mod cli;
mod committed;
mod crash;
mod diff;
mod engine;
mod inspect;
mod joins;
mod kafka;
mod languages;
mod postgres;
mod reload;
mod shadow;
mod state;
mod tables;
mod windows;
