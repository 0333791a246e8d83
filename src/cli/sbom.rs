//! `imgbuild sbom IMAGE|REFERENCE|oci:DIR[:TAG] [--format spdx|cyclonedx|provenance]
//! [--platform P]`: prints the image's SBOM (or its provenance) on stdout.

use super::global::Global;
use crate::referrers::{self, Format};
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::io::Write;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FormatArg {
    /// SPDX 2.3 JSON, as stored with the image
    Spdx,
    /// CycloneDX 1.6 JSON, converted from it
    Cyclonedx,
    /// The SLSA v1 provenance statement (in-toto)
    Provenance,
}

#[derive(Args, Debug)]
pub struct SbomArgs {
    /// An image name from imgbuild.toml (its last build), a registry reference, or oci:DIR[:TAG]
    target: String,
    #[arg(long, value_enum, default_value = "spdx")]
    format: FormatArg,
    /// The platform's manifest of a multi-platform image, e.g. linux/arm64
    #[arg(long, value_name = "OS/ARCH")]
    platform: Option<String>,
}

pub fn run(g: &Global, a: &SbomArgs) -> Result<i32> {
    let found = referrers::find(
        &g.cwd,
        g.config.as_deref(),
        &g.insecure,
        &a.target,
        a.platform.as_deref(),
    )?;
    let format = match a.format {
        FormatArg::Spdx => Format::Spdx,
        FormatArg::Cyclonedx => Format::CycloneDx,
        FormatArg::Provenance => Format::Provenance,
    };
    let bytes = referrers::render(&found, format)?;
    std::io::stdout().write_all(&bytes)?;
    Ok(0)
}
