//! `taper launch` with real processes: torchrun's environment, rank-prefixed
//! output, fail-fast with the failed rank's exit code, signal forwarding, and
//! no process left behind.
#![cfg(unix)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn launch(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_taper"));
    command.arg("launch").args(args);
    command
}

/// True while `pid` runs (a zombie waiting to be reaped has stopped running).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(") ")
            .next()
            .is_some_and(|rest| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

fn read_pids(dir: &Path, n: usize) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pids: Vec<u32> = (0..n)
            .filter_map(|r| std::fs::read_to_string(dir.join(format!("rank{r}.pid"))).ok())
            .filter_map(|t| t.trim().parse().ok())
            .collect();
        if pids.len() == n {
            return pids;
        }
        assert!(Instant::now() < deadline, "ranks did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn every_rank_gets_torchrun_environment_and_prefixed_lines() {
    let out = launch(&["--nproc-per-node", "3", "--", "sh", "-c",
                       "echo $RANK/$LOCAL_RANK/$WORLD_SIZE/$LOCAL_WORLD_SIZE/$GROUP_RANK/$MASTER_ADDR/$MASTER_PORT/$NCCL_NVLS_ENABLE"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort();
    assert_eq!(lines.len(), 3, "{stdout}");
    let port = lines[0].rsplit('/').nth(1).unwrap();
    assert!(
        port.parse::<u16>().is_ok_and(|p| p > 0),
        "a free port: {stdout}"
    );
    for (r, line) in lines.iter().enumerate() {
        assert_eq!(
            *line,
            format!("[rank{r}]: {r}/{r}/3/3/0/127.0.0.1/{port}/0")
        );
    }
}

#[test]
fn two_launchers_as_two_nodes_number_the_ranks_across_nodes() {
    let run = |node: &str| {
        launch(&[
            "--nnodes",
            "2",
            "--node-rank",
            node,
            "--nproc-per-node",
            "2",
            "--master-port",
            "29511",
            "--",
            "sh",
            "-c",
            "echo $RANK $LOCAL_RANK $WORLD_SIZE $GROUP_RANK $MASTER_PORT",
        ])
        .output()
        .unwrap()
    };
    let mut lines: Vec<String> = ["0", "1"]
        .iter()
        .flat_map(|node| {
            String::from_utf8(run(node).stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "[rank0]: 0 0 4 0 29511",
            "[rank1]: 1 1 4 0 29511",
            "[rank2]: 2 0 4 1 29511",
            "[rank3]: 3 1 4 1 29511"
        ]
    );
}

#[test]
fn a_failing_rank_stops_the_others_and_gives_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    // Rank 1 fails after 0.5 s; rank 0 waits on a child of its own, which must not outlive it.
    let script = format!(
        "sleep 30 & echo $! > {d}/rank$RANK.pid; if [ $RANK = 1 ]; then sleep 0.5; exit 3; fi; wait",
        d = dir.path().display()
    );
    let start = Instant::now();
    let child = launch(&["--nproc-per-node", "2", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = read_pids(dir.path(), 2);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rank 1 (local rank 1, pid") && stderr.contains("exited with code 3"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(100));
    for pid in pids {
        assert!(!alive(pid), "process {pid} was left behind");
    }
}

#[test]
fn sigint_to_the_launcher_stops_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "sleep 30 & echo $! > {d}/rank$RANK.pid; wait",
        d = dir.path().display()
    );
    let child = launch(&["--nproc-per-node", "2", "--", "sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = read_pids(dir.path(), 2);
    let start = Instant::now();
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&out.stderr).contains("forwarding it to every rank"));
    std::thread::sleep(Duration::from_millis(100));
    for pid in pids {
        assert!(!alive(pid), "process {pid} was left behind");
    }
}

#[test]
fn bad_launch_arguments_say_what_to_fix() {
    let out = launch(&["--nnodes", "2", "--node-rank", "2", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--node-rank 2 is out of range for --nnodes 2"));
    let out = launch(&["--nproc-per-node", "1", "--", "/no/such/program"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("starting `/no/such/program` for rank 0"));
}
