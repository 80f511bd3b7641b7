//! Collectives: all-reduce, broadcast, all-gather, reduce-scatter, barrier.
//!
//! [`Collective`] is what the data-parallel Trainer calls; a backend moves
//! the bytes. [`SingleProcess`] is the world of one (every call returns its
//! input). [`TcpCollective`] runs on CPUs over TCP for multi-process runs
//! without GPUs and for CI: a star through rank 0, which reduces in rank order
//! so results are bitwise the same on every rank and in every run. It is
//! simple rather than fast (rank 0 carries all the traffic); GPUs use NCCL
//! (`nccl.rs`, with the `cuda` feature).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};

use super::{DistEnv, TcpStore};
use crate::error::{Error, Result};

/// How all-reduce and reduce-scatter combine the ranks' tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// The element-wise sum.
    Sum,
    /// The element-wise mean over ranks.
    Average,
}

/// Collective operations over the ranks of a job. Every rank must make the
/// same calls in the same order.
pub trait Collective: Send + Sync {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// The number of ranks.
    fn world_size(&self) -> usize;
    /// The backend's name (`single`, `tcp`, `nccl`), for logs and tests.
    fn name(&self) -> &'static str;
    /// Whether the calls exchange anything. False only for the world of one
    /// of [`SingleProcess`], whose calls the Trainer skips; a backend with
    /// one rank (NCCL under `taper launch --nproc-per-node 1`) still runs
    /// every collective, as PyTorch's DDP does.
    fn exchanges(&self) -> bool {
        true
    }
    /// Every rank's `tensor` combined; the same result on every rank.
    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor>;
    /// Rank `root`'s tensor, on every rank.
    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor>;
    /// Every rank's tensor, in rank order (shapes may differ).
    fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>>;
    /// The all-reduced tensor cut along dimension 0 into `world_size` equal
    /// parts; this rank's part.
    fn reduce_scatter(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let reduced = self.all_reduce(tensor, op)?;
        let rows = reduced.dim(0)?;
        if rows % self.world_size() != 0 {
            return Err(Error::Usage(format!(
                "reduce_scatter needs dimension 0 ({rows}) to be a multiple of the world size ({})",
                self.world_size()
            )));
        }
        let part = rows / self.world_size();
        Ok(reduced.narrow(0, self.rank() * part, part)?)
    }
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()> {
        self.all_reduce(&Tensor::zeros(1, DType::F32, &Device::Cpu)?, ReduceOp::Sum)
            .map(|_| ())
    }
}

/// A world of one: nothing to exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn name(&self) -> &'static str {
        "single"
    }
    fn exchanges(&self) -> bool {
        false
    }
    fn all_reduce(&self, tensor: &Tensor, _op: ReduceOp) -> Result<Tensor> {
        Ok(tensor.clone())
    }
    fn broadcast(&self, tensor: &Tensor, _root: usize) -> Result<Tensor> {
        Ok(tensor.clone())
    }
    fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        Ok(vec![tensor.clone()])
    }
}

/// Collectives over TCP, through rank 0.
pub struct TcpCollective {
    rank: usize,
    world_size: usize,
    /// Rank 0: one stream per other rank (index r - 1). Others: the stream to rank 0.
    peers: Mutex<Vec<TcpStream>>,
}

/// One tensor on the wire: its shape, then its values as f32.
struct Frame {
    dims: Vec<usize>,
    values: Vec<f32>,
}

impl TcpCollective {
    /// Connects the ranks of `env`; the address of rank 0's data socket goes
    /// through the rendezvous `store`. Reads fail after `timeout` without data.
    pub fn connect(env: &DistEnv, store: &TcpStore, timeout: Duration) -> Result<Self> {
        let peers = if env.rank == 0 {
            let listener = TcpListener::bind((env.master_addr.as_str(), 0))?;
            let port = listener.local_addr()?.port();
            store.set("collective/port", port.to_string().as_bytes())?;
            let mut peers: Vec<Option<TcpStream>> = (1..env.world_size).map(|_| None).collect();
            for _ in 1..env.world_size {
                let (mut stream, _) = listener.accept()?;
                let rank = read_u64(&mut stream)? as usize;
                if rank == 0 || rank >= env.world_size || peers[rank - 1].is_some() {
                    return Err(Error::Usage(format!(
                        "a peer announced itself as rank {rank}, which is not expected"
                    )));
                }
                peers[rank - 1] = Some(stream);
            }
            peers
                .into_iter()
                .map(|p| p.expect("every rank connected"))
                .collect()
        } else {
            let port = String::from_utf8_lossy(&store.get("collective/port")?).to_string();
            let mut stream =
                TcpStream::connect((env.master_addr.as_str(), port.parse::<u16>().unwrap_or(0)))?;
            stream.write_all(&(env.rank as u64).to_le_bytes())?;
            vec![stream]
        };
        for stream in &peers {
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(timeout))?;
        }
        Ok(Self {
            rank: env.rank,
            world_size: env.world_size,
            peers: Mutex::new(peers),
        })
    }

    /// Rank 0 collects every rank's frame (in rank order) and answers each
    /// with what `combine` makes of them; the others send theirs and receive.
    fn exchange(
        &self,
        mine: Frame,
        combine: impl Fn(&[Frame]) -> Result<Vec<Frame>>,
    ) -> Result<Vec<Frame>> {
        let mut peers = self.peers.lock().expect("never poisoned");
        if self.rank == 0 {
            let mut frames = vec![mine];
            for (i, peer) in peers.iter_mut().enumerate() {
                let mut sent = read_frames(peer).map_err(|e| lost(i + 1, e))?;
                if sent.len() != 1 {
                    return Err(Error::Usage(format!(
                        "rank {} sent {} tensors to a collective, not 1",
                        i + 1,
                        sent.len()
                    )));
                }
                frames.push(sent.remove(0));
            }
            let answer = combine(&frames)?;
            for (i, peer) in peers.iter_mut().enumerate() {
                write_frames(peer, &answer).map_err(|e| lost(i + 1, e))?;
            }
            Ok(answer)
        } else {
            let peer = &mut peers[0];
            write_frames(peer, std::slice::from_ref(&mine)).map_err(|e| lost(0, e))?;
            read_frames(peer).map_err(|e| lost(0, e))
        }
    }
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn name(&self) -> &'static str {
        "tcp"
    }

    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let world = self.world_size as f32;
        let out = self.exchange(frame(tensor)?, |frames| {
            let mut sum = frames[0].values.clone();
            for (r, f) in frames.iter().enumerate().skip(1) {
                if f.values.len() != sum.len() {
                    return Err(Error::Usage(format!(
                        "all_reduce: rank {r} sent {} values, rank 0 has {}",
                        f.values.len(),
                        sum.len()
                    )));
                }
                sum.iter_mut().zip(&f.values).for_each(|(a, b)| *a += b);
            }
            if op == ReduceOp::Average {
                sum.iter_mut().for_each(|a| *a /= world);
            }
            Ok(vec![Frame {
                dims: frames[0].dims.clone(),
                values: sum,
            }])
        })?;
        restore(&out[0], tensor)
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        let out = self.exchange(frame(tensor)?, |frames| {
            let f = &frames[root];
            Ok(vec![Frame {
                dims: f.dims.clone(),
                values: f.values.clone(),
            }])
        })?;
        restore(&out[0], tensor)
    }

    fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        let out = self.exchange(frame(tensor)?, |frames| {
            Ok(frames
                .iter()
                .map(|f| Frame {
                    dims: f.dims.clone(),
                    values: f.values.clone(),
                })
                .collect())
        })?;
        out.iter().map(|f| restore(f, tensor)).collect()
    }
}

fn lost(rank: usize, e: std::io::Error) -> Error {
    Error::Usage(format!("lost the connection to rank {rank} during a collective ({e}); did it exit or stop responding?"))
}

fn frame(tensor: &Tensor) -> Result<Frame> {
    Ok(Frame {
        dims: tensor.dims().to_vec(),
        values: tensor
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&Device::Cpu)?
            .to_vec1()?,
    })
}

/// A tensor of `like`'s dtype and device from a frame.
fn restore(frame: &Frame, like: &Tensor) -> Result<Tensor> {
    Ok(
        Tensor::from_slice(&frame.values, frame.dims.as_slice(), &Device::Cpu)?
            .to_dtype(like.dtype())?
            .to_device(like.device())?,
    )
}

fn read_u64(stream: &mut TcpStream) -> std::io::Result<u64> {
    let mut buf = [0u8; 8];
    stream.read_exact(&mut buf)?;
    Ok(u64::from_le_bytes(buf))
}

/// Reads what [`write_frames`] wrote: a count, then the frames.
fn read_frames(stream: &mut TcpStream) -> std::io::Result<Vec<Frame>> {
    let count = read_u64(stream)? as usize;
    (0..count).map(|_| read_frame(stream)).collect()
}

fn read_frame(stream: &mut TcpStream) -> std::io::Result<Frame> {
    let ndims = read_u64(stream)? as usize;
    let dims = (0..ndims)
        .map(|_| read_u64(stream).map(|d| d as usize))
        .collect::<std::io::Result<Vec<_>>>()?;
    let n = read_u64(stream)? as usize;
    let mut bytes = vec![0u8; n * 4];
    stream.read_exact(&mut bytes)?;
    let values = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Frame { dims, values })
}

/// Writes a count, then each frame, in one buffer (one system call).
fn write_frames(stream: &mut TcpStream, frames: &[Frame]) -> std::io::Result<()> {
    let mut buf = Vec::new();
    buf.extend((frames.len() as u64).to_le_bytes());
    for f in frames {
        buf.extend((f.dims.len() as u64).to_le_bytes());
        for d in &f.dims {
            buf.extend((*d as u64).to_le_bytes());
        }
        buf.extend((f.values.len() as u64).to_le_bytes());
        for v in &f.values {
            buf.extend(v.to_le_bytes());
        }
    }
    stream.write_all(&buf)
}
