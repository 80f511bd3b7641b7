//! Collectives on CUDA GPUs through NCCL (the `cuda` feature).
//!
//! Why NCCL: it is what multi-GPU and multi-node users run (PyTorch's DDP
//! does), it moves the bytes GPU to GPU over NVLink or the network without
//! a copy through the host, and it runs on the device's stream, ordered
//! with candle's kernels, so a collective needs no synchronisation of its
//! own. The TCP backend stays for CPU runs and CI.
//!
//! The communicator is created on the stream of candle's device for the
//! GPU of this process (`LOCAL_RANK`); rank 0 makes the NCCL unique id and
//! hands it to the other ranks through the rendezvous store. Each operation
//! is a candle [`CustomOp1`] whose CUDA forward calls NCCL: that is candle's
//! public way to turn a buffer written outside candle into a tensor.
//! Tensors on the CPU (the Trainer's logged losses and evaluation counts)
//! go to the GPU, through the collective and back.

use std::sync::Mutex;

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp as NcclOp};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{CpuStorage, CudaStorage, CustomOp1, DType, Device, Layout, Shape, Tensor};

use super::{Collective, DistEnv, ReduceOp, TcpStore};
use crate::error::{Error, Result};

/// A communicator guarded for use from any thread.
struct SharedComm(Comm);

// SAFETY: an NCCL communicator may be used from any thread as long as two
// calls on it do not run at once; `NcclCollective` keeps it behind a mutex.
unsafe impl Send for SharedComm {}

/// Collectives over NCCL between the GPUs of a job, one GPU per rank.
pub struct NcclCollective {
    rank: usize,
    world_size: usize,
    device: Device,
    comm: Mutex<SharedComm>,
}

impl NcclCollective {
    /// Creates the communicator of `env` on `device` (a CUDA device: the
    /// GPU of this rank). Rank 0's NCCL id goes through `store`, under
    /// `key`, so that a process can make more than one communicator.
    pub fn connect(env: &DistEnv, store: &TcpStore, device: &Device, key: &str) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            return Err(Error::Usage(format!(
                "NCCL collectives need a CUDA device, not {device:?}"
            )));
        };
        let id = if env.rank == 0 {
            let id = Id::new().map_err(|e| nccl_error("creating the unique id", e))?;
            let bytes: Vec<u8> = id.internal().iter().map(|c| *c as u8).collect();
            store.set(key, &bytes)?;
            id
        } else {
            let bytes = store.get(key)?;
            let internal: [std::ffi::c_char; 128] = bytes
                .iter()
                .map(|b| *b as std::ffi::c_char)
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| {
                    Error::Usage(format!(
                        "the NCCL id in the store has {} bytes, not 128",
                        bytes.len()
                    ))
                })?;
            Id::uninit(internal)
        };
        let stream = cuda.cuda_stream();
        // NCCL initialises on the thread's current CUDA device.
        stream.context().bind_to_thread().w()?;
        let comm = Comm::from_rank(stream, env.rank, env.world_size, id)
            .map_err(|e| nccl_error("joining the communicator", e))?;
        Ok(Self {
            rank: env.rank,
            world_size: env.world_size,
            device: device.clone(),
            comm: Mutex::new(SharedComm(comm)),
        })
    }

    /// Runs `kind` on `tensor` (moved to this rank's GPU and made
    /// contiguous), returning the result on the tensor's own device.
    fn run(&self, tensor: &Tensor, kind: Kind) -> Result<Tensor> {
        let on_gpu = tensor.to_device(&self.device)?.contiguous()?;
        let comm = self.comm.lock().unwrap_or_else(|p| p.into_inner());
        let op = NcclOp1 {
            comm: &comm.0,
            kind,
        };
        let out = on_gpu.apply_op1_no_bwd(&op)?;
        Ok(out.to_device(tensor.device())?)
    }
}

fn nccl_error(doing: &str, e: impl std::fmt::Debug) -> Error {
    Error::Usage(format!("NCCL failed {doing}: {e:?}"))
}

impl Collective for NcclCollective {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn name(&self) -> &'static str {
        "nccl"
    }

    fn all_reduce(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        self.run(tensor, Kind::AllReduce(op))
    }

    fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<Tensor> {
        if root >= self.world_size {
            return Err(Error::Usage(format!(
                "broadcast from rank {root} in a world of {}",
                self.world_size
            )));
        }
        self.run(tensor, Kind::Broadcast(root))
    }

    /// NCCL gathers equal parts: the ranks first gather their row counts,
    /// pad to the largest, gather, and cut the padding off again.
    fn all_gather(&self, tensor: &Tensor) -> Result<Vec<Tensor>> {
        let tensor = if tensor.rank() == 0 {
            tensor.reshape(1)?
        } else {
            tensor.clone()
        };
        let rows = tensor.dim(0)?;
        let counts = self.run(
            &Tensor::new(&[rows as f32], &Device::Cpu)?,
            Kind::AllGather(self.world_size),
        )?;
        let counts: Vec<usize> = counts
            .to_vec1::<f32>()?
            .into_iter()
            .map(|c| c as usize)
            .collect();
        let most = counts.iter().copied().max().unwrap_or(0);
        let padded = if rows < most {
            let mut shape = tensor.dims().to_vec();
            shape[0] = most - rows;
            Tensor::cat(
                &[
                    tensor.clone(),
                    Tensor::zeros(shape, tensor.dtype(), tensor.device())?,
                ],
                0,
            )?
        } else {
            tensor.clone()
        };
        let gathered = self.run(&padded, Kind::AllGather(self.world_size))?;
        counts
            .iter()
            .enumerate()
            .map(|(r, &n)| Ok(gathered.narrow(0, r * most, n)?))
            .collect()
    }

    fn reduce_scatter(&self, tensor: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let rows = tensor.dim(0)?;
        if rows % self.world_size != 0 {
            return Err(Error::Usage(format!(
                "reduce_scatter needs dimension 0 ({rows}) to be a multiple of the world size ({})",
                self.world_size
            )));
        }
        self.run(tensor, Kind::ReduceScatter(op, self.world_size))
    }

    /// An all-reduce of one value, then a wait for the GPU to finish it.
    fn barrier(&self) -> Result<()> {
        let one = Tensor::zeros(1, DType::F32, &self.device)?;
        self.run(&one, Kind::AllReduce(ReduceOp::Sum))?;
        self.device.synchronize()?;
        Ok(())
    }
}

/// Which collective an [`NcclOp1`] runs.
#[derive(Debug, Clone, Copy)]
enum Kind {
    AllReduce(ReduceOp),
    Broadcast(usize),
    /// The world size: the output has that many times the input's rows.
    AllGather(usize),
    /// The operation and the world size: the output has 1/world of the rows.
    ReduceScatter(ReduceOp, usize),
}

/// One NCCL call as a candle op (no backward: collectives here move
/// gradients and weights, they are not differentiated through).
struct NcclOp1<'a> {
    comm: &'a Comm,
    kind: Kind,
}

fn nccl_op(op: ReduceOp) -> NcclOp {
    match op {
        ReduceOp::Sum => NcclOp::Sum,
        ReduceOp::Average => NcclOp::Avg,
    }
}

impl NcclOp1<'_> {
    fn out_shape(&self, shape: &Shape) -> Shape {
        let mut dims = shape.dims().to_vec();
        match self.kind {
            Kind::AllReduce(_) | Kind::Broadcast(_) => {}
            Kind::AllGather(world) => dims[0] *= world,
            Kind::ReduceScatter(_, world) => dims[0] /= world,
        }
        Shape::from(dims)
    }

    fn call<T: NcclType + candle_core::cuda_backend::cudarc::driver::DeviceRepr>(
        &self,
        src: &CudaView<'_, T>,
        dst: &mut CudaSlice<T>,
    ) -> std::result::Result<(), String> {
        let comm = self.comm;
        let status = match self.kind {
            Kind::AllReduce(op) => comm.all_reduce(src, dst, &nccl_op(op)),
            Kind::Broadcast(root) => comm.broadcast(Some(src), dst, root as i32),
            Kind::AllGather(_) => comm.all_gather(src, dst),
            Kind::ReduceScatter(op, _) => comm.reduce_scatter(src, dst, &nccl_op(op)),
        };
        status.map(|_| ()).map_err(|e| format!("{e:?}"))
    }
}

impl CustomOp1 for NcclOp1<'_> {
    fn name(&self) -> &'static str {
        "nccl"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        candle_core::bail!("NCCL collectives run on CUDA tensors")
    }

    fn cuda_fwd(
        &self,
        storage: &CudaStorage,
        layout: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("NCCL collectives need a contiguous tensor")
        };
        let shape = self.out_shape(layout.shape());
        let device = storage.device().clone();
        macro_rules! run {
            ($variant:ident, $src:expr) => {{
                let src = $src.slice(start..end);
                // SAFETY: NCCL writes every element of the output.
                let mut dst = unsafe { device.alloc(shape.elem_count())? };
                self.call(&src, &mut dst)
                    .map_err(|e| candle_core::Error::Msg(format!("NCCL {:?}: {e}", self.kind)))?;
                CudaStorageSlice::$variant(dst)
            }};
        }
        let slice = match &storage.slice {
            CudaStorageSlice::F32(s) => run!(F32, s),
            CudaStorageSlice::BF16(s) => run!(BF16, s),
            CudaStorageSlice::F16(s) => run!(F16, s),
            CudaStorageSlice::F64(s) => run!(F64, s),
            CudaStorageSlice::U8(s) => run!(U8, s),
            CudaStorageSlice::U32(s) => run!(U32, s),
            CudaStorageSlice::I32(s) => run!(I32, s),
            CudaStorageSlice::I64(s) => run!(I64, s),
            _ => candle_core::bail!("NCCL has no type for {:?}", storage.dtype()),
        };
        Ok((CudaStorage { slice, device }, shape))
    }
}
