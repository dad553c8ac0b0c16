//! Polls that find nothing changed skip the dump (no socket count moved, no close
//! notification arrived); a connection opened after a run of such polls must still be
//! reported by the next poll.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn a_connection_opened_after_quiet_polls_is_reported() {
    if !root_or_skip("conn_unchanged") {
        return;
    }
    let dir = TempDir::new("unchanged");
    let cfg = console_config(
        &dir,
        "connbeat.poll_interval: 200ms\nlogging.metrics.enabled: false",
    );
    let mut agent = Agent::start(&cfg, &["-d", "conn"]);
    // Wait until the agent has answered polls without dumping.
    poll_until(Duration::from_secs(60), || {
        agent
            .stderr()
            .iter()
            .any(|l| l.contains("poll done") && l.contains("unchanged=true"))
            .then_some(())
    })
    .expect("no poll was answered without a dump on an idle host");
    let srv = named_helper(&dir, "cb-quietsrv");
    let cli = named_helper(&dir, "cb-quietcli");
    let server = Proc::spawn(&srv, &["listen", "127.0.0.1:0", "1"]);
    let port = server.ready_port();
    let client = Proc::spawn(&cli, &["connect", &format!("127.0.0.1:{port}"), "1"]);
    client.wait_line("HELD", Duration::from_secs(30));
    let tuple = client.socks()[0];
    agent.wait_events(
        "open events of the new connection",
        Duration::from_secs(30),
        |ev| {
            let open = |pid: u32, local: std::net::SocketAddr| {
                ev.iter().any(|e| {
                    e["action"] == "open"
                        && common::local(e) == Some(local)
                        && e["local_process"]["pid"].as_u64() == Some(pid as u64)
                })
            };
            open(client.pid, tuple.local) && open(server.pid, tuple.remote)
        },
    );
    let (status, stderr) = agent.terminate(Duration::from_secs(20));
    assert!(status.success());
    let totals = total_metrics(&stderr).expect("Total metrics line");
    assert!(
        totals.get("conn.polls.unchanged").copied().unwrap_or(0) > 0,
        "{totals:?}"
    );
}
