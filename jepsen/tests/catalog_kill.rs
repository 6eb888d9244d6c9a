//! A short chaos run in `cargo test`: venue creation while nodes are SIGKILLed.

use std::time::Duration;

use boxoffice_jepsen::{run, Nemesis, RunOpts, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_survives_kills() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let report = run(RunOpts {
        nodes: 3,
        workload: Workload::Catalog,
        nemeses: vec![Nemesis::Kill],
        time: Duration::from_secs(12),
        seed: 7,
        clients: 4,
        hold_seconds: 600,
        max_skew_ms: 0,
        snapshot_every: 20,
        out: Some(out.path().to_path_buf()),
    })
    .await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    assert!(report.faults["kill"] >= 1, "the nemesis killed something");
    assert!(report.ok > 0, "some writes were acknowledged");
    assert!(
        report.snapshots.built >= 1,
        "the catalog went through snapshots: {:?}",
        report.snapshots
    );
    assert!(report.valid(), "checker: {:?}", report.catalog);
    let dir = report.out_dir.expect("run dir");
    assert!(
        std::fs::read_to_string(dir.join("history.jsonl"))?
            .lines()
            .count()
            >= 2 * report.ok
    );
    Ok(())
}
