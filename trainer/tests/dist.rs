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

#[test]
fn tcp_collectives_agree_on_every_rank() {
    use candle_core::{Device, Tensor};
    use taper::dist::{Collective, ReduceOp, TcpCollective};
    let port = free_port();
    let handles: Vec<_> = world(3, port)
        .into_iter()
        .map(|e| {
            std::thread::spawn(move || {
                let store = TcpStore::connect(&e, Duration::from_secs(20)).unwrap();
                let c = TcpCollective::connect(&e, &store, Duration::from_secs(20)).unwrap();
                let r = e.rank as f32;
                let mine = Tensor::new(&[[r, 10.0 * r], [1.0, 2.0]], &Device::Cpu).unwrap();
                let sum: Vec<Vec<f32>> = c
                    .all_reduce(&mine, ReduceOp::Sum)
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                let avg: Vec<Vec<f32>> = c
                    .all_reduce(&mine, ReduceOp::Average)
                    .unwrap()
                    .to_vec2()
                    .unwrap();
                let from_2: Vec<Vec<f32>> = c.broadcast(&mine, 2).unwrap().to_vec2().unwrap();
                // Ranks hold different numbers of rows.
                let rows = Tensor::new(vec![r; e.rank + 1], &Device::Cpu).unwrap();
                let gathered: Vec<Vec<f32>> = c
                    .all_gather(&rows)
                    .unwrap()
                    .iter()
                    .map(|t| t.to_vec1().unwrap())
                    .collect();
                let scattered: Vec<f32> = c
                    .reduce_scatter(
                        &Tensor::new(&[1f32, 2.0, 3.0, 4.0, 5.0, 6.0], &Device::Cpu).unwrap(),
                        ReduceOp::Sum,
                    )
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                c.barrier().unwrap();
                (sum, avg, from_2, gathered, scattered)
            })
        })
        .collect();
    for (rank, h) in handles.into_iter().enumerate() {
        let (sum, avg, from_2, gathered, scattered) = h.join().unwrap();
        assert_eq!(sum, vec![vec![3.0, 30.0], vec![3.0, 6.0]]);
        assert_eq!(avg, vec![vec![1.0, 10.0], vec![1.0, 2.0]]);
        assert_eq!(from_2, vec![vec![2.0, 20.0], vec![1.0, 2.0]]);
        assert_eq!(
            gathered,
            vec![vec![0.0], vec![1.0, 1.0], vec![2.0, 2.0, 2.0]]
        );
        let expected: Vec<f32> = [3.0, 6.0, 9.0, 12.0, 15.0, 18.0][rank * 2..rank * 2 + 2].to_vec();
        assert_eq!(scattered, expected);
    }
}

#[test]
fn shards_cover_the_data_as_torch_distributed_sampler_does() {
    use std::sync::Arc;
    use taper::data::{DataLoader, Field, Sample, Sharding, VecDataset};
    let data: Arc<VecDataset> = Arc::new(VecDataset::new(
        (0..10)
            .map(|i| Sample {
                input: Field::F32(vec![i as f32]),
                label: None,
            })
            .collect(),
    ));
    let full = DataLoader::new(data.clone(), 2).shuffled(7).epoch_order(3);
    // Strided: padded to 12 with the order's start, rank r takes every 3rd from r.
    let shards: Vec<Vec<usize>> = (0..3)
        .map(|r| {
            DataLoader::new(data.clone(), 2)
                .shuffled(7)
                .sharded(r, 3, Sharding::Strided)
                .epoch_order(3)
        })
        .collect();
    let mut padded = full.clone();
    padded.extend(&full[..2]);
    for (r, shard) in shards.iter().enumerate() {
        assert_eq!(
            *shard,
            padded
                .iter()
                .skip(r)
                .step_by(3)
                .copied()
                .collect::<Vec<_>>()
        );
        assert_eq!(shard.len(), 4);
    }
    // Contiguous, unpadded: concatenated in rank order they are the data set.
    let chunks: Vec<usize> = (0..3)
        .flat_map(|r| {
            DataLoader::new(data.clone(), 2)
                .sharded(r, 3, Sharding::Contiguous)
                .epoch_order(0)
        })
        .collect();
    assert_eq!(chunks, (0..10).collect::<Vec<_>>());
    assert_eq!(
        DataLoader::new(data, 2)
            .sharded(2, 3, Sharding::Contiguous)
            .num_batches(),
        1
    );
}
