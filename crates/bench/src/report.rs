//! Medians and ratios of a results file into BENCHMARKS.md.

use std::collections::HashMap;

use crate::client::Result;

pub fn main(_opts: &HashMap<String, String>, _files: &[String]) -> Result<()> {
    Err("report: not yet".into())
}
