//! Mounts that must be accepted or rejected (e.g. an unknown option).

use super::util::{mount, umount};
use crate::Ctx;
use anyhow::Context;
use erofs_guest::plan::MountOptionsParams;

pub fn run(ctx: &mut Ctx, params: &serde_json::Value) -> anyhow::Result<()> {
    let p: MountOptionsParams =
        serde_json::from_value(params.clone()).context("mount_options params")?;
    for c in &p.cases {
        let got = mount(&c.mount);
        let mounted = got.is_ok();
        let r = match (got, c.expect_ok) {
            (Ok(()), true) => Ok(format!("-o {:?} accepted", c.mount.data)),
            (Err(e), false) => Ok(format!("-o {:?} rejected: {e}", c.mount.data)),
            (Ok(()), false) => Err(format!(
                "-o {:?} was accepted, expected a rejection",
                c.mount.data
            )),
            (Err(e), true) => Err(format!("-o {:?} rejected: {e}", c.mount.data)),
        };
        ctx.check(&c.label, r);
        if mounted {
            ctx.check(&format!("{} umount", c.label), umount(&c.mount.target));
        }
    }
    Ok(())
}
