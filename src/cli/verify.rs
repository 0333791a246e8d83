//! `imgbuild verify IMAGE|REFERENCE|oci:DIR[:TAG]|docker-archive:FILE`.

use super::global::Global;
use crate::verify;
use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// An image name from imgbuild.toml, a registry reference (host/repo@sha256:… or :tag),
    /// oci:DIR[:TAG], or docker-archive:FILE
    target: String,
    #[arg(long)]
    json: bool,
    /// Only this platform of an image index (repeatable; default: every platform)
    #[arg(long = "platform", value_name = "OS/ARCH")]
    platforms: Vec<String>,
}

pub fn run(g: &Global, a: &VerifyArgs) -> Result<i32> {
    let all = verify::targets(
        &g.cwd,
        g.config.as_deref(),
        &g.insecure,
        &a.target,
        &super::global::platforms(&a.platforms)?,
    )?;
    for v in all {
        report(g, a, &v);
    }
    Ok(0)
}

fn report(g: &Global, a: &VerifyArgs, v: &verify::Verified) {
    if a.json {
        println!(
            "{}",
            serde_json::json!({"image": v.what, "platform": v.platform.as_ref().map(|p| p.to_string()), "ok": true, "layers": v.checked.layers, "bytes": v.checked.bytes, "sbom_packages": v.sbom})
        );
    } else {
        let python = if v.distributions > 0 {
            format!(
                "; {} Python distributions match their RECORD",
                v.distributions
            )
        } else {
            String::new()
        };
        let sbom = match v.sbom {
            Some(n) => format!("; its SBOM's {n} packages are the image's"),
            None => "; it has no SBOM".into(),
        };
        let on = match &v.platform {
            Some(p) => format!(" ({p})"),
            None => String::new(),
        };
        g.progress.note(&format!(
            "verified {}{on}: {} layers, {} bytes, every digest and diff_id checks{python}{sbom}",
            v.what, v.checked.layers, v.checked.bytes
        ));
    }
}
