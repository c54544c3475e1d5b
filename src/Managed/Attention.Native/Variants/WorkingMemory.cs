namespace Attention.Native.Variants;

/// <summary>What a run of a layer does: the forward alone, the forward kept for a backward, or decoding token by token.</summary>
internal enum RunMode
{
    Forward,
    Training,
    Decode,
}

/// <summary>The peak bytes of a run, split by where they live (on the CPU backend both are host memory).</summary>
/// <param name="Backend">Parameters, activations, gradients, caches and score blocks, on the layer's backend.</param>
/// <param name="Host">File contents and the decode loop's staging arrays, always in host memory.</param>
internal readonly record struct MemoryEstimate(double Backend, double Host)
{
    public double Total => Backend + Host;
}

/// <summary>
/// A conservative estimate of a layer run's peak working memory, made before anything is allocated so a run that cannot fit
/// is refused at once instead of being killed by the OS minutes later. The graph keeps every intermediate of a forward until
/// the pass is disposed, and a backward adds a gradient of the same size for each, so the estimate counts, per token, the
/// widths of the tensors each variant's forward creates (variants.md; see the Build methods), plus per-sequence state, the
/// parameters, and the CPU attention's score blocks (64 query rows × T keys per worker).
/// </summary>
internal static class WorkingMemory
{
    // The CPU softmax attention's query rows per score block (SoftmaxAttentionCpu.RowBlock).
    private const double ScoreRows = 64;

    // Managed memory is returned only when the GC runs, and large arrays wait for a full collection: host-side peaks run
    // above the live bytes (transnormer at T = 8M in bf16 counts 22 GiB live and was killed past 22 GB).
    private const double GcHeadroom = 1.25;

    /// <summary>The estimate for x [<paramref name="batch"/>, <paramref name="tokens"/>, d_model] in <paramref name="dtype"/>.</summary>
    /// <param name="config">The layer's validated config.</param>
    /// <param name="batch">B.</param>
    /// <param name="tokens">T.</param>
    /// <param name="dtype">The run's dtype.</param>
    /// <param name="mode">Forward, training (forward kept plus backward) or decode.</param>
    /// <param name="parameterElements">The layer's parameter elements (e.g. counted from its weights file).</param>
    /// <param name="cpu">True on the CPU backend: half precision is widened to F32 per op, and score blocks live on the host.</param>
    public static MemoryEstimate Estimate(LayerConfig config, long batch, long tokens, DType dtype, RunMode mode, long parameterElements, bool cpu)
    {
        ArgumentNullException.ThrowIfNull(config);
        double b = batch, t = tokens, dm = config.DModel;
        double e = dtype.SizeInBytes();
        // The CPU computes half precision in F32 copies of each op's tensors: counting activations at 4 bytes covers them.
        double work = cpu && dtype.IsHalfPrecision() ? 4 : e;
        var (perToken, perSequence, attentionWidth) = Widths(config);
        double parameters = parameterElements * e;
        // x as read from the file and x on the backend.
        double host = 2 * b * t * dm * e;
        double backend;
        if (mode == RunMode.Decode)
        {
            double cache = config.CacheElementsPerToken is > 0 and { } perTokenCache ? b * t * perTokenCache : b * perSequence;
            // transnormer's state is F32 in a 16-bit layer (Lightning.StateDType): count it at its own size.
            double cacheElement = config is TransNormerConfig ? Math.Max(work, Ops.Lightning.StateDType(dtype).SizeInBytes()) : work;
            // The decode loop stages x and y as double arrays, and y is rebuilt on the backend from them.
            host += (16 * b * t * dm) + (b * t * dm * e);
            backend = parameters + (cache * cacheElement) + (b * t * dm * e) + (b * perToken * work) + ScoreBlocks(config, t, work, cpu);
        }
        else
        {
            double activations = ((b * t * perToken) + (b * perSequence)) * work;
            backend = parameters + activations + ScoreBlocks(config, t, work, cpu);
            if (mode == RunMode.Training)
            {
                // A gradient per kept tensor and parameter, the backward's per-head dk/dv (softmax variants), dy and dx.
                backend += activations + parameters + (b * t * attentionWidth * work) + ScoreBlocks(config, t, work, cpu) + (2 * b * t * dm * e);
                host += b * t * dm * e;
            }
        }
        return new MemoryEstimate(cpu ? backend * GcHeadroom : backend, host * GcHeadroom);
    }

    // Per token: elements of every tensor the forward creates. Per sequence: state not proportional to T. Attention width:
    // H·(d_qk + d_v) of the softmax attention (its backward holds dk and dv per query head), 0 for the linear variants.
    private static (double PerToken, double PerSequence, double AttentionWidth) Widths(LayerConfig config)
    {
        double dm = config.DModel, h = config.Heads;
        switch (config)
        {
            case GqaConfig c:
            {
                double hd = h * c.HeadDim, gd = (double)c.KvHeads * c.HeadDim;
                // q, rope(q), o; k, v, rope(k); lse; y.
                return ((3 * hd) + (3 * gd) + h + dm, 0, 2 * hd);
            }
            case MlaConfig c:
            {
                double qk = (double)c.QkNopeHeadDim + c.QkRopeHeadDim;
                // Query path (compressed: down, norm; then up, rope and concat), latent (down, norm, rope), kv up and its
                // slices, k concat, o, lse, y.
                double perToken = (2.0 * c.QLoraRank) + (4 * h * qk) + (2 * ((double)c.KvLoraRank + c.QkRopeHeadDim))
                    + (2 * h * ((double)c.QkNopeHeadDim + c.VHeadDim)) + (h * c.VHeadDim) + h + dm;
                return (perToken, 0, h * (qk + c.VHeadDim));
            }
            case TpaConfig c:
            {
                double ranks = (double)c.QRank + c.KRank + c.VRank, d = c.HeadDim;
                // A factors, B factors and their rotations, q/k/v contractions and o, lse, y.
                return ((h * ranks) + (2 * ranks * d) + (4 * h * d) + h + dm, 0, 2 * h * d);
            }
            case SasConfig c:
            {
                double hd = h * c.HeadDim, sd = (double)c.SimHeads * c.HeadDim, sdd = (double)c.SimHeads * c.SimHeadDim;
                // Three projections, four head-conv tensors per stream, five width-expansion tensors for q and k, o, the
                // group sums, lse, y.
                return ((4 * hd) + (15 * sd) + (10 * sdd) + c.SimHeads + dm, 0, sdd + sd);
            }
            case AgentConfig c:
                // q, k, v, o, dwc, sum, y, lse per token; the pooled agents and their values per sequence.
                return ((7 * dm) + h, (2.0 * c.Agents * dm) + (2.0 * h * c.Agents), 2 * dm);
            case FlattenConfig c:
                // q, k (and + pos_enc), v, two focused maps, o, dwc, sum, y; the k·v state per sequence.
                return (10 * dm, h * c.HeadDim * (double)c.HeadDim, 0);
            case AgentVisionConfig c:
                // As the 1-D form, plus kv and its two slices, the pooled columns, and the resized v (reduced grids only).
                return ((10 * dm) + h, (2.0 * c.Agents * dm) + (2.0 * h * c.Agents), 2 * dm);
            case FlattenVisionConfig c:
                // As the 1-D form, plus kv and its two slices and the resized v.
                return (13 * dm, h * c.HeadDim * (double)c.HeadDim, 0);
            case MfaConfig c:
            {
                double hd = h * c.HeadDim, d = c.HeadDim;
                // Query path (down, norm; up, rope), k, v, rope(k); o; lse; y.
                return ((2.0 * c.QLoraDim) + (3 * hd) + (3 * d) + h + dm, 0, 2 * hd);
            }
            case TransNormerConfig c:
            {
                double hd = h * c.HeadDim;
                // q, k (each linear and silu), v, u, o, norm, gate product, y; LRPE doubles q and k; the state per sequence.
                return ((9 * hd) + (c.Lrpe ? 4 * hd : 0) + dm, c.StateElements, 0);
            }
            default:
                throw new ArgumentException($"config: expected a config of a supported variant, actual {config.Variant}", nameof(config));
        }
    }

    // Each CPU worker holds one score block (and the backward a second); the GPU kernels keep theirs on chip.
    private static double ScoreBlocks(LayerConfig config, double tokens, double work, bool cpu) =>
        cpu && config is GqaConfig or MlaConfig or TpaConfig or SasConfig or AgentConfig or AgentVisionConfig or MfaConfig
            ? Environment.ProcessorCount * ScoreRows * tokens * Math.Max(work, 4)
            : 0;
}
