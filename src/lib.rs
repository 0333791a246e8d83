//! imgbuild: reproducible, verified OCI images for Python and Node projects, without a Docker engine.
//!
//! Data flow (docs/ARCHITECTURE.md): `spec` (imgbuild.toml) → `project` (build order, store,
//! source date) → `plan` (`recipe::Ctx` once, one recipe per layer: `filelayer`, `python`, `debian`) →
//! `layer` (deterministic tar, `compress`; `key` and `cache` skip unchanged layers) → checks on
//! the merged `rootfs` → `image` → `store` → `publish` (`layout`, `archive`, `registry`) →
//! `record` → `pin` (compose files); `sbom`, `provenance` and `referrers` say what is in each
//! image and where it came from. `cli` parses and prints; the library decides.

pub mod archive;
pub mod base;
pub mod build;
pub mod cache;
pub mod catalog;
pub mod cli;
pub mod compress;
pub mod debian;
pub mod digest;
pub mod elf;
pub mod error;
pub mod filelayer;
pub mod files;
pub mod http;
pub mod image;
pub mod key;
pub mod layer;
pub mod layout;
pub mod native;
pub mod pin;
pub mod plan;
pub mod preset;
pub mod progress;
pub mod project;
pub mod provenance;
pub mod publish;
pub mod python;
pub mod recipe;
pub mod record;
pub mod referrers;
pub mod registry;
pub mod rootfs;
pub mod runtime;
pub mod sample;
pub mod sbom;
pub mod sharedcache;
pub mod smoke;
pub mod spec;
pub mod start;
pub mod store;
pub mod target;
pub mod verify;
