//! placeholder
use kernel::prelude::*;
module! { type: Scull, name: "scull", authors: ["scull-rs"], description: "scull", license: "GPL", }
struct Scull;
impl kernel::Module for Scull { fn init(_m: &'static ThisModule) -> Result<Self> { pr_info!("hello\n"); Ok(Scull) } }
