//! The distributed environment and the rendezvous store, with real sockets.

use std::collections::HashMap;
use std::time::Duration;

use taper::dist::{DistEnv, TcpStore};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(vars: &[(&str, &str)]) -> taper::Result<DistEnv> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    DistEnv::from_vars(|name| map.get(name).cloned())
}

#[test]
fn the_environment_comes_from_torchrun_then_slurm_then_a_world_of_one() {
    let e = env(&[
        ("RANK", "3"),
        ("LOCAL_RANK", "1"),
        ("WORLD_SIZE", "4"),
        ("LOCAL_WORLD_SIZE", "2"),
        ("MASTER_ADDR", "10.0.0.1"),
        ("MASTER_PORT", "1234"),
    ])
    .unwrap();
    assert_eq!(
        (
            e.rank,
            e.local_rank,
            e.world_size,
            e.local_world_size,
            e.master_addr.as_str(),
            e.master_port
        ),
        (3, 1, 4, 2, "10.0.0.1", 1234)
    );
    let e = env(&[
        ("SLURM_PROCID", "5"),
        ("SLURM_LOCALID", "1"),
        ("SLURM_NTASKS", "8"),
        ("SLURM_NTASKS_PER_NODE", "4"),
    ])
    .unwrap();
    assert_eq!(
        (e.rank, e.local_rank, e.world_size, e.local_world_size),
        (5, 1, 8, 4)
    );
    assert_eq!(env(&[]).unwrap(), DistEnv::single(29500));
    let err = env(&[("RANK", "0")]).unwrap_err().to_string();
    assert!(err.contains("WORLD_SIZE is not"), "{err}");
    let err = env(&[("RANK", "4"), ("WORLD_SIZE", "4")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    let err = env(&[("RANK", "x"), ("WORLD_SIZE", "4")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("RANK=x"), "{err}");
}

fn world(n: usize, port: u16) -> Vec<DistEnv> {
    (0..n)
        .map(|rank| DistEnv {
            rank,
            local_rank: rank,
            world_size: n,
            local_world_size: n,
            ..DistEnv::single(port)
        })
        .collect()
}

#[test]
fn ranks_exchange_values_and_meet_at_barriers() {
    let port = free_port();
    let handles: Vec<_> = world(3, port)
        .into_iter()
        .map(|e| {
            std::thread::spawn(move || {
                // Ranks 1 and 2 may start before rank 0 hosts the store.
                let store = TcpStore::connect(&e, Duration::from_secs(20)).unwrap();
                store
                    .set(
                        &format!("hello/{}", e.rank),
                        format!("from {}", e.rank).as_bytes(),
                    )
                    .unwrap();
                store.barrier("start").unwrap();
                let next = (e.rank + 1) % 3;
                let got = String::from_utf8(store.get(&format!("hello/{next}")).unwrap()).unwrap();
                store.barrier("end").unwrap();
                got
            })
        })
        .collect();
    let got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(got, ["from 1", "from 2", "from 0"]);
}

#[test]
fn a_rank_that_never_joins_is_named_in_the_timeout_error() {
    let port = free_port();
    let mut envs = world(4, port);
    envs.pop(); // rank 3 never starts
    let handles: Vec<_> = envs
        .into_iter()
        .map(|e| {
            std::thread::spawn(move || {
                TcpStore::connect(&e, Duration::from_secs(1))
                    .unwrap()
                    .barrier("init")
                    .unwrap_err()
                    .to_string()
            })
        })
        .collect();
    for h in handles {
        let err = h.join().unwrap();
        assert!(
            err.contains("rank 3 did not join barrier `init` within 1 s (3 of 4 ranks arrived)"),
            "{err}"
        );
    }
    let lonely = DistEnv {
        rank: 1,
        world_size: 2,
        local_rank: 1,
        local_world_size: 2,
        ..DistEnv::single(free_port())
    };
    let err = TcpStore::connect(&lonely, Duration::from_millis(300))
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("rank 1 could not reach the rendezvous store")
            && err.contains("is rank 0 running"),
        "{err}"
    );
}
