//! Per-generation figures of one NeuronCore: the only place a hardware number lives.
//!
//! [`NeuronConfig::trn1`] describes NeuronCore-v2 (trn1), [`NeuronConfig::trn2`]
//! NeuronCore-v3 (trn2). Every field is public so that a user can explore "what if"
//! questions (a faster DMA, a bigger SBUF) by editing one value. The figures come from
//! AWS's Neuron documentation as collected in the project's NEURON.md: the Trainium and
//! Trainium2 architecture guides (clocks, memories, peak), the NKI ISA reference (tile
//! limits), the NKI performance guide (engine cost formulas) and the NKI DMA guide (DMA
//! engines and efficiency). Where a figure had to be calibrated, the field says against
//! what.

/// The NeuronCore generation; it decides the rules that differ between generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// NeuronCore-v2 (trn1, inf2).
    V2,
    /// NeuronCore-v3 (trn2).
    V3,
}

/// Every figure of the modelled NeuronCore. Construct with [`NeuronConfig::trn1`] or
/// [`NeuronConfig::trn2`] and edit fields as needed.
#[derive(Clone, Debug, PartialEq)]
pub struct NeuronConfig {
    /// Human-readable name used in reports ("trn1 NeuronCore-v2").
    pub name: String,
    /// Generation (partition-start alignment and shared ports apply to v2 only).
    pub generation: Generation,

    // ---- memories (architecture guides) ----
    /// Number of SBUF/PSUM partitions and the tensor engine's array size: 128.
    pub partitions: usize,
    /// SBUF bytes per partition: 192 KiB on v2 (24 MiB total), 224 KiB on v3 (28 MiB).
    pub sbuf_bytes_per_partition: usize,
    /// PSUM banks per partition: 8.
    pub psum_banks: usize,
    /// Bytes per PSUM bank per partition: 2 KiB (512 fp32 accumulators).
    pub psum_bank_bytes: usize,
    /// SBUF allocation alignment in bytes (a modelling choice: 64 B keeps DMA rows aligned).
    pub sbuf_alignment: usize,

    // ---- clocks (architecture guides) ----
    /// Tensor engine clock in GHz: 2.8 (v2), 2.4 (v3). Peak = 128·128·2·f.
    pub tensor_clock_ghz: f64,
    /// Vector engine clock in GHz: 1.12 (v2), 0.96 (v3).
    pub vector_clock_ghz: f64,
    /// Scalar (activation) engine clock in GHz: 1.4 (v2), 1.2 (v3).
    pub scalar_clock_ghz: f64,
    /// GpSimd engine clock in GHz: 1.4 (v2), 1.2 (v3).
    pub gpsimd_clock_ghz: f64,

    // ---- tensor engine (NKI ISA reference, nc_matmul; performance guide) ----
    /// Largest contraction (partition) size of a matmul: 128.
    pub matmul_max_k: usize,
    /// Largest stationary free size (output partitions) of a matmul: 128.
    pub matmul_max_m: usize,
    /// Largest moving free size of a matmul: 512 (one PSUM bank of fp32).
    pub matmul_max_n: usize,
    /// Minimum cycles of one matmul (a moving tile shorter than this costs this): 64.
    pub matmul_min_cycles: u64,
    /// Cost multiplier of fp32 operands (the array runs fp32 at a quarter rate): 4.
    pub matmul_fp32_factor: u64,
    /// Cycles per stationary column to load the stationary operand (≈ M/4, overlapping
    /// the previous matmul): 0.25.
    pub stationary_load_cycles_per_column: f64,
    /// Cycles after a matmul's last moving column before its result is readable in PSUM.
    /// NEURON.md leaves it to calibrate; 64 cycles (one array drain of 128 rows at two
    /// rows a cycle) is our modelling choice and none of the validation targets moves
    /// by more than 0.1% between 0 and 256.
    pub matmul_pipeline_latency_cycles: u64,

    // ---- vector / scalar / gpsimd (NKI performance guide) ----
    /// Minimum cycles of a vector or scalar instruction: 64.
    pub vector_min_cycles: u64,
    /// Cycles to start each access of a vector/scalar instruction: ≈ 60.
    pub access_start_cycles: u64,
    /// Extra latency, in the consuming engine's cycles, for an instruction that waits on
    /// another engine's result (a semaphore wait): ≈ 100.
    pub dependency_latency_cycles: u64,
    /// Fixed cycles of a GpSimd instruction (cost ≈ 150 + N): 150.
    pub gpsimd_fixed_cycles: u64,
    /// A minor (innermost) free stride larger than this many bytes halves vector/scalar
    /// throughput: 16.
    pub stride_penalty_bytes: usize,
    /// Speed-up of copy / tensor_scalar with all-bf16 contiguous SBUF operands (v3 fast
    /// mode): 4 on v3, 1 on v2.
    pub fast_mode_copy: f64,
    /// Speed-up of tensor_tensor with bf16 SBUF inputs (v3 fast mode): 2 on v3, 1 on v2.
    pub fast_mode_tensor_tensor: f64,
    /// Vector and GpSimd share the SBUF port (v2: true; v3 lifts it).
    pub shared_sbuf_port_vector_gpsimd: bool,
    /// Vector and Scalar share the PSUM port (v2: true; v3 lifts it).
    pub shared_psum_port_vector_scalar: bool,

    // ---- DMA and HBM (architecture guides; NKI DMA guide) ----
    /// HBM bandwidth available to one core in GB/s (= bytes/ns): 410 on trn1 (820 GB/s per
    /// 2-core chip), 362 on trn2 (2.9 TB/s per 8-core chip).
    pub hbm_bandwidth_gbps: f64,
    /// HBM one core may hold, bytes: 16 GiB on trn1 (32 GiB per 2-core chip), 12 GiB on
    /// trn2 (96 GiB per 8-core chip). Tensors of a device beyond it are `OutOfMemory`.
    pub hbm_capacity_bytes: u64,
    /// DMA engines per core: 16. A 128-partition tile spreads over all of them, 8
    /// partitions each.
    pub dma_engines: usize,
    /// DMA queues a kernel can address (one trace track each): 16.
    pub dma_queues: usize,
    /// Of the DMA queues, how many carry stores to HBM by default (the last ones), so
    /// that a store waiting for its data does not block the loads queued behind it (a
    /// queue is in order). NKI's compiler likewise gives loads and stores separate
    /// queues; 4 of 16 is our modelling choice.
    pub dma_store_queues: usize,
    /// Bandwidth of one DMA engine in GB/s (= bytes/ns) at full efficiency: ≈ 17 on trn1,
    /// 23 on trn2.
    pub dma_engine_bandwidth_gbps: f64,
    /// Fixed cost from a DMA's trigger to the start of its data movement, in ns: NEURON.md
    /// gives 1.3–2 µs across engines; we take 2 µs, the upper end, because the tutorial's
    /// kernels issue DMAs from software-generated descriptors.
    pub dma_fixed_latency_ns: f64,
    /// DMA efficiency as a function of contiguous bytes per partition: points
    /// `(bytes, efficiency)` interpolated linearly in log2(bytes), flat beyond the last
    /// point, proportional to bytes below the first. NEURON.md: it "falls sharply below
    /// 2 KiB per partition and saturates above 4 KiB". CALIBRATED: the 256 B–1 KiB value
    /// 0.38 (16 engines × 17 B/ns × 0.38 ≈ 103 GB/s) was fitted to the three memory-bound
    /// kernels of AWS's NKI matmul tutorial (51.80, 42.96, 22.07 ms), whose effective
    /// bandwidths are 104.9, 103.1 and 103.4 GB/s. The 2 KiB point (0.75) and the 64 B
    /// point are shape assumptions, not measurements.
    pub dma_efficiency: Vec<(usize, f64)>,
}

impl NeuronConfig {
    /// NeuronCore-v2, one core of a trn1 chip.
    pub fn trn1() -> Self {
        NeuronConfig {
            name: "trn1 NeuronCore-v2".to_string(),
            generation: Generation::V2,
            partitions: 128,
            sbuf_bytes_per_partition: 192 * 1024,
            psum_banks: 8,
            psum_bank_bytes: 2048,
            sbuf_alignment: 64,
            tensor_clock_ghz: 2.8,
            vector_clock_ghz: 1.12,
            scalar_clock_ghz: 1.4,
            gpsimd_clock_ghz: 1.4,
            matmul_max_k: 128,
            matmul_max_m: 128,
            matmul_max_n: 512,
            matmul_min_cycles: 64,
            matmul_fp32_factor: 4,
            stationary_load_cycles_per_column: 0.25,
            matmul_pipeline_latency_cycles: 64,
            vector_min_cycles: 64,
            access_start_cycles: 60,
            dependency_latency_cycles: 100,
            gpsimd_fixed_cycles: 150,
            stride_penalty_bytes: 16,
            fast_mode_copy: 1.0,
            fast_mode_tensor_tensor: 1.0,
            shared_sbuf_port_vector_gpsimd: true,
            shared_psum_port_vector_scalar: true,
            hbm_bandwidth_gbps: 410.0,
            hbm_capacity_bytes: 16 << 30,
            dma_engines: 16,
            dma_queues: 16,
            dma_store_queues: 4,
            dma_engine_bandwidth_gbps: 17.0,
            dma_fixed_latency_ns: 2000.0,
            dma_efficiency: vec![
                (64, 0.10),
                (256, 0.38),
                (1024, 0.38),
                (2048, 0.75),
                (4096, 1.0),
            ],
        }
    }

    /// NeuronCore-v3, one core of a trn2 chip.
    pub fn trn2() -> Self {
        NeuronConfig {
            name: "trn2 NeuronCore-v3".to_string(),
            generation: Generation::V3,
            sbuf_bytes_per_partition: 224 * 1024,
            tensor_clock_ghz: 2.4,
            vector_clock_ghz: 0.96,
            scalar_clock_ghz: 1.2,
            gpsimd_clock_ghz: 1.2,
            fast_mode_copy: 4.0,
            fast_mode_tensor_tensor: 2.0,
            shared_sbuf_port_vector_gpsimd: false,
            shared_psum_port_vector_scalar: false,
            hbm_bandwidth_gbps: 362.0,
            hbm_capacity_bytes: 12 << 30,
            dma_engine_bandwidth_gbps: 23.0,
            ..Self::trn1()
        }
    }

    /// Bytes of PSUM per partition (banks × bank size): 16 KiB.
    pub fn psum_bytes_per_partition(&self) -> usize {
        self.psum_banks * self.psum_bank_bytes
    }

    /// Peak tensor-engine FLOP/s for 16-bit operands: 128 · 128 · 2 · clock.
    pub fn tensor_peak_flops(&self) -> f64 {
        (self.partitions * self.partitions * 2) as f64 * self.tensor_clock_ghz * 1e9
    }
}
