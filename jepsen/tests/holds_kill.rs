//! A short chaos run in `cargo test`: seat holds and releases while nodes (often
//! the event group's leader) are SIGKILLed or SIGSTOPped; the history must be
//! linearizable per seat and the healed cluster must agree with it.

use std::time::Duration;

use boxoffice_jepsen::{run, Nemesis, RunOpts, Workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_stay_linearizable_through_kills_and_pauses() -> anyhow::Result<()> {
    let out = tempfile::tempdir()?;
    let report = run(RunOpts {
        nodes: 3,
        workload: Workload::Holds,
        nemeses: vec![Nemesis::Kill, Nemesis::Pause],
        time: Duration::from_secs(15),
        seed: 11,
        clients: 6,
        out: Some(out.path().to_path_buf()),
    })
    .await?;
    eprintln!("{}", serde_json::to_string_pretty(&report)?);
    assert!(report.faults >= 1, "the nemesis killed something");
    assert!(report.ok > 0, "some holds were acknowledged");
    let holds = report.holds.as_ref().expect("a holds verdict");
    assert!(
        holds.linearizability.seats_checked > 0,
        "seats were checked"
    );
    assert!(report.valid(), "checker: {holds:?}");
    Ok(())
}
