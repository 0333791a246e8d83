//! imgbuild: reproducible, verified OCI images for Python and Node projects, without a Docker engine.
//!
//! Data flow: `spec` (imgbuild.toml) → `plan` (recipes per layer) → `layer` (deterministic tar,
//! `compress`) from `files` or `python` → `verify` (on the merged `rootfs`) → `image` (config,
//! manifest) → `store` (content-addressed blobs, `cache`) → `publish` (`layout`, `archive`,
//! `registry`) → `pin` (compose files).

pub mod archive;
pub mod base;
pub mod build;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod compress;
pub mod digest;
pub mod error;
pub mod filelayer;
pub mod files;
pub mod http;
pub mod image;
pub mod key;
pub mod layer;
pub mod layout;
pub mod pin;
pub mod plan;
pub mod preset;
pub mod progress;
pub mod project;
pub mod publish;
pub mod python;
pub mod recipe;
pub mod record;
pub mod registry;
pub mod rootfs;
pub mod sample;
pub mod smoke;
pub mod spec;
pub mod store;
pub mod target;
pub mod verify;
