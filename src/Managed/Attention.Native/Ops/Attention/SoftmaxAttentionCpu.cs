using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;
using static Attention.Native.Ops.SoftmaxAttentionCpuKernels;

namespace Attention.Native.Ops;

/// <summary>
/// CPU implementation of <see cref="SoftmaxAttention"/>, generic over float and double and over the vector width.
/// Forward: each task owns one (batch, head, block of query rows) and walks the keys a tile at a time with an online
/// softmax (running row maximum and sum, the partial output rescaled as the maximum grows), so its scores stay a
/// small tile in L1/L2 whatever T; k is packed once per KV head as the panels the register kernel reads (kᵀ) and v
/// as contiguous rows. Backward (FlashAttention-2's order): each task owns (batch, KV head, range of keys), keeps
/// that range's dk and dv in local accumulators and, per query head of the group and per block of query rows,
/// recomputes the probabilities from the log-sum-exp and runs the five products on tiles. All products use the
/// register kernels of <see cref="SoftmaxAttentionCpuKernels"/> on operands copied once into contiguous, padded
/// buffers, so q, k, v and the gradients may be strided views. Every result is summed in an order fixed by the
/// shapes (not by the scheduling), so runs are deterministic.
/// </summary>
internal static unsafe partial class SoftmaxAttentionCpu
{

    /// <summary>Query rows per forward task (a multiple of <see cref="TileRows"/>).</summary>
    private const int QueryBlock = 96;

    /// <summary>Keys per step of the forward's online softmax (a multiple of every panel width): the score tile stays in L2.</summary>
    private const int KeyTile = 256;

    /// <summary>Keys per backward block, whose dk and dv rows stay hot across the query blocks (a multiple of <see cref="TileRows"/> and of every panel width).</summary>
    private const int KeyBlock = 96;

    /// <summary>Query rows per backward step (a multiple of <see cref="TileRows"/>).</summary>
    private const int BackwardRows = 96;

    /// <summary>The forward packs k and v of this many bytes of KV heads at once (at least one head).</summary>
    private const long WaveBytes = 32L << 20;

    /// <summary>The backward splits a KV head's keys among tasks (each with its own dq) only while those partial dq fit this.</summary>
    private const long PartialBytes = 64L << 20;

    /// <summary>Elements of slack so a rented buffer can be aligned to 64 bytes.</summary>
    private const int Slack = 64;

    /// <summary>
    /// One task per core at a time: the thread pool may run more threads than cores, and time-slicing them would evict
    /// each other's tiles from the caches.
    /// </summary>
    private static readonly ParallelOptions Workers = new() { MaxDegreeOfParallelism = Environment.ProcessorCount };

    public static void Forward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse, SoftmaxAttention.Dims d,
        SoftmaxAttention.Layouts s, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if ((long)d.Tq * (d.H / d.G) < InPlaceQueryRows)
        {
            ForwardInPlace(q, k, v, bias, o, lse, d, s, options);
            return;
        }
        // The vector-width checks are JIT-time constants: only one instantiation is ever compiled.
        if (Vector512.IsHardwareAccelerated)
        {
            Forward<T, Vector512<T>, Simd512<T>>(q, k, v, bias, o, lse, d, s, options);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Forward<T, Vector256<T>, Simd256<T>>(q, k, v, bias, o, lse, d, s, options);
        }
        else
        {
            Forward<T, Vector<T>, SimdVector<T>>(q, k, v, bias, o, lse, d, s, options);
        }
    }

    public static void Backward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse, PinnedBuffer<T> dO,
        PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, PinnedBuffer<T> dbias, SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (Vector512.IsHardwareAccelerated)
        {
            Backward<T, Vector512<T>, Simd512<T>>(q, k, v, bias, o, lse, dO, dq, dk, dv, dbias, d, s, options);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Backward<T, Vector256<T>, Simd256<T>>(q, k, v, bias, o, lse, dO, dq, dk, dv, dbias, d, s, options);
        }
        else
        {
            Backward<T, Vector<T>, SimdVector<T>>(q, k, v, bias, o, lse, dO, dq, dk, dv, dbias, d, s, options);
        }
    }

    /// <summary>A ragged batch (<see cref="AttentionOptions.Sequences"/>): each sequence is a dense problem of batch 1 on its own parts.</summary>
    public static void ForwardRagged<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> o, PinnedBuffer<T> lse, SoftmaxAttention.Dims d, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (queries, keys) = (options.Sequences!, options.KeyLayout!);
        for (int s = 0; s < queries.Count; s++)
        {
            var p = new RaggedParts(d, queries, keys, s);
            Forward(p.Q(q), p.K(k), p.V(v), default, p.O(o), p.Lse(lse), p.Dims, SoftmaxAttention.Layouts.Contiguous(p.Dims), options);
        }
    }

    /// <summary>The backward of <see cref="ForwardRagged"/>, sequence by sequence.</summary>
    public static void BackwardRagged<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> o, PinnedBuffer<T> lse, PinnedBuffer<T> dO,
        PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, SoftmaxAttention.Dims d, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var (queries, keys) = (options.Sequences!, options.KeyLayout!);
        for (int s = 0; s < queries.Count; s++)
        {
            var p = new RaggedParts(d, queries, keys, s);
            Backward(p.Q(q), p.K(k), p.V(v), default, p.O(o), p.Lse(lse), p.O(dO), p.Q(dq), p.K(dk), p.V(dv), default, p.Dims, SoftmaxAttention.Layouts.Contiguous(p.Dims), options);
        }
    }

    /// <summary>Where sequence s of a ragged batch lies in each packed tensor (lse [1, H, N_q]: its heads N_q apart).</summary>
    private readonly struct RaggedParts(SoftmaxAttention.Dims d, SequenceLayout queries, SequenceLayout keys, int s)
    {
        private readonly int _q0 = queries.Start(s), _k0 = keys.Start(s);

        public SoftmaxAttention.Dims Dims { get; } = d.Sequence(queries, keys, s);

        public PinnedBuffer<T> Q<T>(PinnedBuffer<T> t) where T : unmanaged => t.Part((long)_q0 * d.H * d.Dqk, (long)Dims.Tq * d.H * d.Dqk);

        public PinnedBuffer<T> O<T>(PinnedBuffer<T> t) where T : unmanaged => t.Part((long)_q0 * d.H * d.Dv, (long)Dims.Tq * d.H * d.Dv);

        public PinnedBuffer<T> K<T>(PinnedBuffer<T> t) where T : unmanaged => t.Part((long)_k0 * d.G * d.Dqk, (long)Dims.Tk * d.G * d.Dqk);

        public PinnedBuffer<T> V<T>(PinnedBuffer<T> t) where T : unmanaged => t.Part((long)_k0 * d.G * d.Dv, (long)Dims.Tk * d.G * d.Dv);

        public PinnedBuffer<T> Lse<T>(PinnedBuffer<T> t) where T : unmanaged => t.Part(_q0, ((long)(d.H - 1) * d.Tq) + Dims.Tq);
    }

    private static void Forward<T, TVec, TSimd>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse,
        SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        if (d.Tq == 0 || d.B == 0 || d.H == 0)
        {
            return;
        }
        int width = 2 * TSimd.Lanes;
        var geometry = new Geometry(d, options.Causal);
        int dvPad = RoundUp(d.Dv, width);
        int kvHeads = d.B * d.G, groupSize = d.H / d.G, blocks = CeilDiv(d.Tq, QueryBlock);
        // Per KV head: kᵀ as panels of `width` keys (depth-major, keys past L zero), v as rows of dvPad, and the scaled q of
        // each query head of its group (rows up to a whole tile, the pad rows zero).
        long keysPacked = (long)CeilDiv(d.Length, width) * width * d.Dqk;
        long valuesPacked = (long)d.Length * dvPad;
        int queryRows = RoundUp(d.Tq, TileRows);
        long perQueryHead = (long)queryRows * d.Dqk;
        long perHead = keysPacked + valuesPacked + (groupSize * perQueryHead);
        int parts = PackParts(groupSize);
        int wave = (int)Math.Clamp(WaveBytes / Math.Max(1, perHead * sizeof(T)), 1, kvHeads);
        // Scores in base 2 (scale · log2 e · q kᵀ): the softmax then needs 2^x, cheaper than e^x.
        T scale = T.CreateChecked(options.Scale) * Log2E<T>();
        var rented = ArrayPool<T>.Shared.Rent(checked((int)((wave * perHead) + Slack)));
        try
        {
            fixed (T* pinned = rented)
            {
                T* packs = Aligned(pinned);
                for (int first = 0; first < kvHeads; first += wave)
                {
                    int count = Math.Min(wave, kvHeads - first), firstHead = first;
                    var schedule = ForwardSchedule(count, groupSize * blocks, parts);
                    // Packed parts of each head of the wave: its blocks wait for all of them.
                    var packed = new int[count];
                    ForEachTask(schedule.Length, task =>
                    {
                        var (index, item) = schedule[task];
                        int head = firstHead + index, b = head / d.G, g = head % d.G;
                        T* pack = packs + (index * perHead);
                        if (item < 0)
                        {
                            try
                            {
                                int part = -1 - item;
                                if (part < 2)
                                {
                                    // kᵀ in two halves (it is the slowest part), split at a panel.
                                    int panels = CeilDiv(d.Length, width), split = panels / 2 * width;
                                    int from = part == 0 ? 0 : split, to = part == 0 ? split : d.Length;
                                    PackPanels<T>(k, s.K, b, g, from, to - from, d.Dqk, width, pack + ((long)from * d.Dqk));
                                }
                                else if (part == 2)
                                {
                                    PackRows<T, TVec, TSimd>(v, s.V, b, g, 0, d.Length, d.Dv, dvPad, T.One, pack + keysPacked);
                                }
                                else
                                {
                                    T* rows = pack + keysPacked + valuesPacked + ((part - 3) * perQueryHead);
                                    PackRows<T, TVec, TSimd>(q, s.Q, b, (g * groupSize) + part - 3, 0, d.Tq, d.Dqk, d.Dqk, scale, rows);
                                    new Span<T>(rows + ((long)d.Tq * d.Dqk), (queryRows - d.Tq) * d.Dqk).Clear();
                                }
                            }
                            finally
                            {
                                Interlocked.Increment(ref packed[index]);
                            }
                            return;
                        }
                        if (Volatile.Read(ref packed[index]) < parts)
                        {
                            // Another thread is still packing this head (it took the task before this one): wait without sleeping.
                            var spin = default(SpinWait);
                            while (Volatile.Read(ref packed[index]) < parts)
                            {
                                spin.SpinOnce(sleep1Threshold: -1);
                            }
                        }
                        // Later blocks of a causal head see more keys: hand them out first so the last tasks are short.
                        int block = blocks - 1 - (item % blocks);
                        int hh = item / blocks, h = (g * groupSize) + hh;
                        T* queries = pack + keysPacked + valuesPacked + (hh * perQueryHead);
                        ForwardBlock<T, TVec, TSimd>(bias, o, lse, d, s, geometry, b, h, block * QueryBlock, queries, pack, pack + keysPacked, dvPad);
                    });
                }
            }
        }
        finally
        {
            ArrayPool<T>.Shared.Return(rented);
        }
    }

    /// <summary>Pack tasks per KV head of the forward: two halves of kᵀ, v, and q of each query head of the group.</summary>
    private static int PackParts(int groupSize) => 3 + groupSize;

    /// <summary>
    /// The order of a forward wave's tasks, (head in the wave, item): item −1 − p packs part p of that head (see
    /// <see cref="PackParts"/>), item ≥ 0 is one of its blocks. Head 0's packs come first; each later head's are queued just
    /// after the first block of the head before it, so packing (memory-bound) overlaps blocks (compute-bound) and is done
    /// before its own blocks are reached.
    /// </summary>
    private static (int Head, int Item)[] ForwardSchedule(int heads, int blocksPerHead, int parts)
    {
        var schedule = new (int Head, int Item)[heads * (blocksPerHead + parts)];
        int n = 0;
        for (int part = 0; part < parts; part++)
        {
            schedule[n++] = (0, -1 - part);
        }
        for (int head = 0; head < heads; head++)
        {
            for (int item = 0; item < blocksPerHead; item++)
            {
                schedule[n++] = (head, item);
                if (item == 0 && head + 1 < heads)
                {
                    for (int part = 0; part < parts; part++)
                    {
                        schedule[n++] = (head + 1, -1 - part);
                    }
                }
            }
        }
        return schedule;
    }

    /// <summary>
    /// Runs <paramref name="body"/>(0 … count − 1) on up to one thread per core, each taking the next task in order as it
    /// finishes one: no thread sits idle while tasks remain, and tasks start in the order given.
    /// </summary>
    private static void ForEachTask(int count, Action<int> body)
    {
        int workers = Math.Min(count, Environment.ProcessorCount);
        if (workers <= 1)
        {
            for (int task = 0; task < count; task++)
            {
                body(task);
            }
            return;
        }
        int next = -1;
        Parallel.For(0, workers, Workers, _ =>
        {
            int task;
            while ((task = Interlocked.Increment(ref next)) < count)
            {
                body(task);
            }
        });
    }

    /// <summary>One (batch, head, block of query rows) of the forward: key tiles in order, the softmax kept online.</summary>
    private static void ForwardBlock<T, TVec, TSimd>(PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse, SoftmaxAttention.Dims d,
        SoftmaxAttention.Layouts s, Geometry geometry, int b, int h, int r0, T* queries, T* keys, T* values, int dvPad)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes, width = 2 * lanes;
        int rows = Math.Min(QueryBlock, d.Tq - r0), padded = RoundUp(rows, TileRows);
        int dqk = d.Dqk;
        long outAt = (long)padded * KeyTile, maxAt = outAt + ((long)padded * dvPad);
        long total = maxAt + (3L * padded);
        var rented = ArrayPool<T>.Shared.Rent(checked((int)(total + (2 * Slack))));
        try
        {
            fixed (T* pinned = rented)
            {
                T* scores = Aligned(pinned), acc = Aligned(scores + outAt), rowMax = acc + ((long)padded * dvPad);
                T* rowSum = rowMax + padded, rescale = rowSum + padded;
                // This block's rows of scale · log2 e · q (packed with the head), so the scores need no scaling.
                T* qs = queries + ((long)r0 * dqk);
                // The rows of o lie a token stride apart, out of the prefetchers' sight: ask for all of them now, so their misses
                // overlap and are over when they are written at the end.
                Prefetch(o, s.O, b, h, r0, rows, d.Dv);
                new Span<T>(acc, padded * dvPad).Clear();
                new Span<T>(rowMax, padded).Fill(T.NegativeInfinity);
                new Span<T>(rowSum, padded).Clear();
                int groups = padded / TileRows;
                int keyEnd = geometry.KeysSeenBy(r0 + rows - 1);
                for (int j0 = 0; j0 < keyEnd; j0 += KeyTile)
                {
                    int tile = Math.Min(KeyTile, keyEnd - j0), panels = CeilDiv(tile, width);
                    MultiplyRows<T, TVec, TSimd>(groups, panels, dqk, qs, dqk, keys + ((long)j0 * dqk), width, (long)width * dqk, scores, KeyTile, Store.Overwrite);
                    for (int i = 0; i < padded; i++)
                    {
                        T* row = scores + ((long)i * KeyTile);
                        int visible = i < rows ? Math.Clamp(geometry.KeysSeenBy(r0 + i) - j0, 0, tile) : 0;
                        if (visible > 0 && !bias.IsEmpty)
                        {
                            var add = new Span<T>(row, visible);
                            TensorPrimitives.MultiplyAdd<T>(bias.Slice((((long)h * d.Tq) + r0 + i) * d.Tk + j0, visible), Log2E<T>(), add, add);
                        }
                        int live = MaskTail(row, visible, lanes);
                        T max = live == 0 ? T.NegativeInfinity : RowMax<T, TVec, TSimd>(row, live);
                        T newMax = T.Max(rowMax[i], max);
                        if (T.IsNegativeInfinity(newMax))
                        {
                            // Nothing visible yet: the row stays empty.
                            new Span<T>(row, tile).Clear();
                            rescale[i] = T.One;
                            continue;
                        }
                        T sum = live == 0 ? T.Zero : Exp2Shifted<T, TVec, TSimd>(row, live, newMax);
                        if (live < tile)
                        {
                            new Span<T>(row + live, tile - live).Clear();
                        }
                        T factor = T.Exp2(rowMax[i] - newMax);
                        rowSum[i] = (rowSum[i] * factor) + sum;
                        rowMax[i] = newMax;
                        rescale[i] = factor;
                    }
                    // acc = rescale ⊙ acc + p · v over this tile's keys.
                    MultiplyRows<T, TVec, TSimd>(groups, dvPad / width, tile, scores, KeyTile, values + ((long)j0 * dvPad), dvPad, width, acc, dvPad, Store.ScaleRows, rescale);
                }
                long lseBase = (((long)b * d.H) + h) * d.LseStride + r0;
                for (int i = 0; i < rows; i++)
                {
                    ScaleRow<T, TVec, TSimd>(acc + ((long)i * dvPad), T.One / rowSum[i], d.Dv, Row(o, s.O, b, r0 + i, h, d.Dv));
                    lse[lseBase + i] = (rowMax[i] + T.Log2(rowSum[i])) * Ln2<T>();
                }
            }
        }
        finally
        {
            ArrayPool<T>.Shared.Return(rented);
        }
    }

    private static void Backward<T, TVec, TSimd>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse,
        PinnedBuffer<T> dO, PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, PinnedBuffer<T> dbias, SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s,
        AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        if (d.Tq == 0 || d.B == 0 || d.H == 0 || (dq.IsEmpty && dk.IsEmpty && dv.IsEmpty && dbias.IsEmpty))
        {
            return;
        }
        int width = 2 * TSimd.Lanes;
        var geometry = new Geometry(d, options.Causal);
        var sizes = new BackwardSizes(d, width);
        int keyBlocks = CeilDiv(d.Length, KeyBlock);
        // Enough tasks for every core: a KV head's keys are split into chunks when there are few heads; each chunk then
        // sums its own dq, and the chunks' dq are added in order afterwards. dbias is shared by the batch: one task per KV
        // head walks the batch in order.
        int chunks = 1;
        if (dbias.IsEmpty)
        {
            chunks = Math.Clamp(CeilDiv(2 * Environment.ProcessorCount, d.B * d.G), 1, keyBlocks);
            long partial = (long)d.B * d.H * sizes.QueryRows * sizes.DqkPad * sizeof(T);
            while (chunks > 1 && (dq.IsEmpty ? 0 : chunks * partial) > PartialBytes)
            {
                chunks--;
            }
        }
        T scale = T.CreateChecked(options.Scale);
        long partialHead = (long)sizes.QueryRows * sizes.DqkPad;
        T[]? partials = chunks > 1 && !dq.IsEmpty ? GC.AllocateUninitializedArray<T>(checked((int)(((long)chunks * d.B * d.H * partialHead) + Slack)), pinned: true) : null;
        T* partialBase = partials is null ? null : Aligned((T*)Unsafe.AsPointer(ref partials[0]));
        var work = new BackwardWork<T>(q, k, v, bias, o, lse, dO, dq, dk, dv, dbias, d, s, geometry, sizes, scale);
        if (!dbias.IsEmpty)
        {
            Parallel.For(0, d.G, Workers, g =>
            {
                for (int b = 0; b < d.B; b++)
                {
                    BackwardKeys<T, TVec, TSimd>(work, b, g, 0, d.Length, null);
                }
            });
            return;
        }
        Parallel.For(0, d.B * d.G * chunks, Workers, task =>
        {
            int chunk = task % chunks, head = task / chunks;
            int b = head / d.G, g = head % d.G;
            int k0 = Math.Min(d.Length, Share(keyBlocks, chunks, chunk) * KeyBlock), k1 = Math.Min(d.Length, Share(keyBlocks, chunks, chunk + 1) * KeyBlock);
            T* dqPartial = partialBase is null ? null : partialBase + (((((long)chunk * d.B) + b) * d.H) + (g * (d.H / d.G))) * partialHead;
            BackwardKeys<T, TVec, TSimd>(work, b, g, k0, k1, dqPartial);
        });
        if (partials is null)
        {
            return;
        }
        // dq = Σ over chunks of each chunk's dq, in chunk order, times the scale the scores carried.
        Parallel.For(0, d.B * d.H, Workers, head =>
        {
            int b = head / d.H, h = head % d.H;
            for (int t = 0; t < d.Tq; t++)
            {
                var target = dq.Slice(s.DQ.At(b, t, h), d.Dqk);
                T* row = partialBase + ((((long)b * d.H) + h) * partialHead) + ((long)t * sizes.DqkPad);
                var sum = new Span<T>(row, d.Dqk);
                for (int chunk = 1; chunk < chunks; chunk++)
                {
                    TensorPrimitives.Add<T>(sum, new ReadOnlySpan<T>(row + ((long)chunk * d.B * d.H * partialHead), d.Dqk), sum);
                }
                TensorPrimitives.MultiplyAdd<T>(sum, scale, target, target);
            }
        });
    }

    /// <summary>
    /// The gradients from keys [k0, k1) of KV head (b, g): their dk and dv, and each query head's share of dq, added to dq
    /// (<paramref name="dqPartial"/> null) or written to that head's partial dq (this chunk's slot, heads of the group in order).
    /// </summary>
    private static void BackwardKeys<T, TVec, TSimd>(BackwardWork<T> w, int b, int g, int k0, int k1, T* dqPartial)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        var d = w.Dims;
        var z = w.Sizes;
        int lanes = TSimd.Lanes, width = 2 * lanes;
        int keys = k1 - k0;
        if (keys <= 0)
        {
            return;
        }
        bool wantQ = !w.Dq.IsEmpty, wantK = !w.Dk.IsEmpty, wantV = !w.Dv.IsEmpty;
        int panels = CeilDiv(keys, width), keyRows = RoundUp(keys, KeyBlock);
        // Layout of this task's buffers: kᵀ and vᵀ panels, k rows, dk and dv sums, then per query head q·scale, dO, its dq,
        // delta, and the score and gradient tiles.
        long kPanelsAt = 0, vPanelsAt = kPanelsAt + ((long)panels * width * d.Dqk), kRowsAt = vPanelsAt + ((long)panels * width * d.Dv);
        long dkAt = kRowsAt + ((long)keyRows * z.DqkPad), dvAt = dkAt + ((long)keyRows * z.DqkPad), qsAt = dvAt + ((long)keyRows * z.DvPad);
        long doAt = qsAt + ((long)z.QueryRows * z.DqkPad), dqAt = doAt + ((long)z.QueryRows * z.DvPad), deltaAt = dqAt + ((long)z.QueryRows * z.DqkPad);
        long scoresAt = RoundUp(deltaAt + z.QueryRows, Slack), gradsAt = scoresAt + ((long)BackwardRows * KeyBlock), total = gradsAt + ((long)BackwardRows * KeyBlock);
        var rented = ArrayPool<T>.Shared.Rent(checked((int)(total + Slack)));
        try
        {
            fixed (T* pinned = rented)
            {
                T* at = Aligned(pinned);
                T* kPanels = at + kPanelsAt, vPanels = at + vPanelsAt, kRows = at + kRowsAt, dkSum = at + dkAt, dvSum = at + dvAt;
                T* qs = at + qsAt, dOs = at + doAt, dqSum = at + dqAt, delta = at + deltaAt, scores = at + scoresAt, grads = at + gradsAt;
                PackPanels<T>(w.K, w.Layouts.K, b, g, k0, keys, d.Dqk, width, kPanels);
                PackPanels<T>(w.V, w.Layouts.V, b, g, k0, keys, d.Dv, width, vPanels);
                if (wantQ)
                {
                    PackRows<T, TVec, TSimd>(w.K, w.Layouts.K, b, g, k0, keys, d.Dqk, z.DqkPad, T.One, kRows);
                }
                new Span<T>(dkSum, keyRows * z.DqkPad).Clear();
                new Span<T>(dvSum, keyRows * z.DvPad).Clear();
                int groupSize = d.H / d.G;
                for (int hh = 0; hh < groupSize; hh++)
                {
                    int h = (g * groupSize) + hh;
                    PackRows<T, TVec, TSimd>(w.Q, w.Layouts.Q, b, h, 0, d.Tq, d.Dqk, z.DqkPad, w.Scale * Log2E<T>(), qs);
                    PackRows<T, TVec, TSimd>(w.DO, w.Layouts.DO, b, h, 0, d.Tq, d.Dv, z.DvPad, T.One, dOs);
                    new Span<T>(qs + ((long)d.Tq * z.DqkPad), (z.QueryRows - d.Tq) * z.DqkPad).Clear();
                    new Span<T>(dOs + ((long)d.Tq * z.DvPad), (z.QueryRows - d.Tq) * z.DvPad).Clear();
                    for (int t = 0; t < d.Tq; t++)
                    {
                        delta[t] = TensorPrimitives.Dot<T>(new ReadOnlySpan<T>(dOs + ((long)t * z.DvPad), d.Dv), w.O.Slice(w.Layouts.O.At(b, t, h), d.Dv));
                    }
                    T* dqHead = dqPartial is null ? dqSum : dqPartial + ((long)hh * z.QueryRows * z.DqkPad);
                    if (wantQ)
                    {
                        new Span<T>(dqHead, z.QueryRows * z.DqkPad).Clear();
                    }
                    long lseBase = (((long)b * d.H) + h) * d.LseStride;
                    for (int j0 = k0; j0 < k1; j0 += KeyBlock)
                    {
                        int block = Math.Min(KeyBlock, k1 - j0), blockPanels = CeilDiv(block, width);
                        // Columns the tiles hold: the keys' panels, or the dk/dv rows' groups when those reach further.
                        int span = Math.Max(blockPanels * width, RoundUp(block, TileRows));
                        long local = j0 - k0;
                        for (int r0 = w.Geometry.FirstRowSeeing(j0); r0 < d.Tq; r0 += BackwardRows)
                        {
                            int rows = Math.Min(BackwardRows, d.Tq - r0), padded = RoundUp(rows, TileRows), groups = padded / TileRows;
                            // p = 2^(log2 e · (scale · q kᵀ (+ bias) − lse)), masked entries 0.
                            MultiplyRows<T, TVec, TSimd>(groups, blockPanels, d.Dqk, qs + ((long)r0 * z.DqkPad), z.DqkPad, kPanels + (local * d.Dqk), width, (long)width * d.Dqk, scores, KeyBlock, Store.Overwrite);
                            for (int i = 0; i < padded; i++)
                            {
                                T* row = scores + ((long)i * KeyBlock);
                                int visible = i < rows ? Math.Clamp(w.Geometry.KeysSeenBy(r0 + i) - j0, 0, block) : 0;
                                if (visible > 0 && !w.Bias.IsEmpty)
                                {
                                    var add = new Span<T>(row, visible);
                                    TensorPrimitives.MultiplyAdd<T>(w.Bias.Slice((((long)h * d.Tq) + r0 + i) * d.Tk + j0, visible), Log2E<T>(), add, add);
                                }
                                int live = MaskTail(row, visible, lanes);
                                if (live > 0)
                                {
                                    Exp2Shifted<T, TVec, TSimd>(row, live, w.Lse[lseBase + r0 + i] * Log2E<T>());
                                }
                                new Span<T>(row + live, span - live).Clear();
                            }
                            // dp = dO vᵀ, then ds = p ⊙ (dp − delta) in its place.
                            MultiplyRows<T, TVec, TSimd>(groups, blockPanels, d.Dv, dOs + ((long)r0 * z.DvPad), z.DvPad, vPanels + (local * d.Dv), width, (long)width * d.Dv, grads, KeyBlock, Store.Overwrite);
                            for (int i = 0; i < padded; i++)
                            {
                                T* gradRow = grads + ((long)i * KeyBlock);
                                if (i >= rows)
                                {
                                    new Span<T>(gradRow, span).Clear();
                                    continue;
                                }
                                ScoreGradient<T, TVec, TSimd>(scores + ((long)i * KeyBlock), gradRow, blockPanels * width, delta[r0 + i]);
                                if (span > blockPanels * width)
                                {
                                    new Span<T>(gradRow + (blockPanels * width), span - (blockPanels * width)).Clear();
                                }
                                if (!w.Dbias.IsEmpty)
                                {
                                    var target = w.Dbias.Slice((((long)h * d.Tq) + r0 + i) * d.Tk + j0, block);
                                    TensorPrimitives.Add<T>(target, new ReadOnlySpan<T>(gradRow, block), target);
                                }
                            }
                            int keyGroups = RoundUp(block, TileRows) / TileRows;
                            if (wantV)
                            {
                                // dv += pᵀ dO
                                MultiplyTransposed<T, TVec, TSimd>(keyGroups, z.DvPad / width, rows, scores, KeyBlock, dOs + ((long)r0 * z.DvPad), z.DvPad, width, dvSum + (local * z.DvPad), z.DvPad, Store.Add);
                            }
                            if (wantK)
                            {
                                // dk += dsᵀ (scale · log2 e · q), the log2 e taken out when dk is written
                                MultiplyTransposed<T, TVec, TSimd>(keyGroups, z.DqkPad / width, rows, grads, KeyBlock, qs + ((long)r0 * z.DqkPad), z.DqkPad, width, dkSum + (local * z.DqkPad), z.DqkPad, Store.Add);
                            }
                            if (wantQ)
                            {
                                // dq += ds k (scaled once at the end)
                                MultiplyRows<T, TVec, TSimd>(groups, z.DqkPad / width, block, grads, KeyBlock, kRows + (local * z.DqkPad), z.DqkPad, width, dqHead + ((long)r0 * z.DqkPad), z.DqkPad, Store.Add);
                            }
                        }
                    }
                    if (wantQ && dqPartial is null)
                    {
                        for (int t = 0; t < d.Tq; t++)
                        {
                            var target = w.Dq.Slice(w.Layouts.DQ.At(b, t, h), d.Dqk);
                            TensorPrimitives.MultiplyAdd<T>(new ReadOnlySpan<T>(dqHead + ((long)t * z.DqkPad), d.Dqk), w.Scale, target, target);
                        }
                    }
                }
                for (int j = 0; j < keys; j++)
                {
                    if (wantK)
                    {
                        var target = w.Dk.Slice(w.Layouts.DK.At(b, k0 + j, g), d.Dqk);
                        TensorPrimitives.MultiplyAdd<T>(new ReadOnlySpan<T>(dkSum + ((long)j * z.DqkPad), d.Dqk), Ln2<T>(), target, target);
                    }
                    if (wantV)
                    {
                        var target = w.Dv.Slice(w.Layouts.DV.At(b, k0 + j, g), d.Dv);
                        TensorPrimitives.Add<T>(target, new ReadOnlySpan<T>(dvSum + ((long)j * z.DvPad), d.Dv), target);
                    }
                }
            }
        }
        finally
        {
            ArrayPool<T>.Shared.Return(rented);
        }
    }

    /// <summary>
    /// Sets row[visible ..] to −∞ up to the next whole vector and returns that length: the vector passes then see only
    /// visible scores (2^−∞ = 0).
    /// </summary>
    private static int MaskTail<T>(T* row, int visible, int lanes)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int live = RoundUp(visible, lanes);
        for (int j = visible; j < live; j++)
        {
            row[j] = T.NegativeInfinity;
        }
        return live;
    }

    /// <summary>Asks the cache for rows [t0, t0 + count) of head h of a [B, T, heads, width] view.</summary>
    private static void Prefetch<T>(PinnedBuffer<T> source, SoftmaxAttention.RowStrides layout, int b, int h, int t0, int count, int rowWidth)
        where T : unmanaged
    {
        if (!Sse.IsSupported || rowWidth == 0)
        {
            return;
        }
        for (int t = 0; t < count; t++)
        {
            byte* row = (byte*)Row(source, layout, b, t0 + t, h, rowWidth);
            for (int offset = 0; offset < rowWidth * sizeof(T); offset += 64)
            {
                Sse.Prefetch0(row + offset);
            }
        }
    }

    /// <summary>
    /// Rows [t0, t0 + count) of head h of a [B, T, heads, width] view, times <paramref name="factor"/>, as contiguous rows
    /// <paramref name="stride"/> apart (the columns past width zero).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackRows<T, TVec, TSimd>(PinnedBuffer<T> source, SoftmaxAttention.RowStrides layout, int b, int h, int t0, int count, int rowWidth, int stride,
        T factor, T* target)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        for (int t = 0; t < count; t++)
        {
            T* to = target + ((long)t * stride);
            ScaleRow<T, TVec, TSimd>(Row(source, layout, b, t0 + t, h, rowWidth), factor, rowWidth, to);
            new Span<T>(to + rowWidth, stride - rowWidth).Clear();
        }
    }

    /// <summary>to[0 .. n) = factor · from[0 .. n).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void ScaleRow<T, TVec, TSimd>(T* from, T factor, int n, T* to)
        where T : unmanaged, IFloatingPointIeee754<T>
        where TVec : struct
        where TSimd : ISimd<T, TVec>
    {
        int lanes = TSimd.Lanes, j = 0;
        TVec f = TSimd.Broadcast(factor);
        for (; j + lanes <= n; j += lanes)
        {
            TSimd.Store(TSimd.Multiply(TSimd.Load(from + j), f), to + j);
        }
        for (; j < n; j++)
        {
            to[j] = from[j] * factor;
        }
    }

    /// <summary>The first element of row (b, t, h) of a view, its <paramref name="rowWidth"/> elements bounds-checked.</summary>
    private static T* Row<T>(PinnedBuffer<T> source, SoftmaxAttention.RowStrides layout, int b, int t, int h, int rowWidth)
        where T : unmanaged =>
        rowWidth == 0 ? null : (T*)Unsafe.AsPointer(ref MemoryMarshal.GetReference(source.Slice(layout.At(b, t, h), rowWidth)));

    /// <summary>
    /// Rows [t0, t0 + count) of head h of a [B, T, heads, depth] view, transposed into panels of <paramref name="width"/>
    /// rows each stored depth-major (element (p, j) of a panel at p·width + j), as the register kernels read B; rows past
    /// count are zero.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void PackPanels<T>(PinnedBuffer<T> source, SoftmaxAttention.RowStrides layout, int b, int h, int t0, int count, int depth, int width, T* target)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int panels = CeilDiv(count, width);
        new Span<T>(target + ((long)(count / width) * width * depth), (panels - (count / width)) * width * depth).Clear();
        // Row by row, each read in order and scattered down its column of the panel: a head's rows lie a token stride
        // apart, often a multiple of 4 KiB, so reading many rows side by side would keep evicting them from L1.
        for (int t = 0; t < count; t++)
        {
            T* column = target + ((long)(t / width) * width * depth) + (t % width);
            T* row = Row(source, layout, b, t0 + t, h, depth);
            for (int p = 0; p < depth; p++)
            {
                column[(long)p * width] = row[p];
            }
        }
    }

    private static T Log2E<T>()
        where T : IFloatingPointIeee754<T> =>
        T.CreateChecked(1.4426950408889634);

    private static T Ln2<T>()
        where T : IFloatingPointIeee754<T> =>
        T.CreateChecked(0.6931471805599453);

    private static T* Aligned<T>(T* pointer)
        where T : unmanaged =>
        (T*)(((nuint)pointer + 63) & ~(nuint)63);

    private static int CeilDiv(int a, int b) => (a + b - 1) / b;

    private static int RoundUp(int a, int multiple) => CeilDiv(a, multiple) * multiple;

    private static long RoundUp(long a, int multiple) => (a + multiple - 1) / multiple * multiple;

    /// <summary>Start of part <paramref name="part"/> when <paramref name="total"/> items are shared out evenly among <paramref name="parts"/>.</summary>
    private static int Share(int total, int parts, int part) => (int)((long)total * part / parts);

    /// <summary>Which keys each query row sees: the first L (the valid keys), and with the causal mask only those up to its position.</summary>
    private readonly struct Geometry(SoftmaxAttention.Dims d, bool causal)
    {
        // Query row t sits at position L − T_q + t.
        private readonly int _offset = d.Length - d.Tq;

        /// <summary>The number of keys row t sees (keys [0, n)).</summary>
        public int KeysSeenBy(int t) => causal ? Math.Min(d.Length, _offset + t + 1) : d.Length;

        /// <summary>The first query row that sees key j.</summary>
        public int FirstRowSeeing(int j) => causal ? Math.Max(0, j - _offset) : 0;
    }

    /// <summary>The backward's padded widths: q and dq rows of DqkPad, dO rows of DvPad, QueryRows rows (T_q and a tile's slack).</summary>
    private readonly struct BackwardSizes(SoftmaxAttention.Dims d, int width)
    {
        public int DqkPad { get; } = RoundUp(d.Dqk, width);

        public int DvPad { get; } = RoundUp(d.Dv, width);

        public int QueryRows { get; } = d.Tq + TileRows;
    }

    /// <summary>The backward's operands, shared by its tasks.</summary>
    private sealed class BackwardWork<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse,
        PinnedBuffer<T> dO, PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, PinnedBuffer<T> dbias, SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s,
        Geometry geometry, BackwardSizes sizes, T scale)
        where T : unmanaged
    {
        public PinnedBuffer<T> Q => q;

        public PinnedBuffer<T> K => k;

        public PinnedBuffer<T> V => v;

        public PinnedBuffer<T> Bias => bias;

        public PinnedBuffer<T> O => o;

        public PinnedBuffer<T> Lse => lse;

        public PinnedBuffer<T> DO => dO;

        public PinnedBuffer<T> Dq => dq;

        public PinnedBuffer<T> Dk => dk;

        public PinnedBuffer<T> Dv => dv;

        public PinnedBuffer<T> Dbias => dbias;

        public SoftmaxAttention.Dims Dims => d;

        public SoftmaxAttention.Layouts Layouts => s;

        public Geometry Geometry => geometry;

        public BackwardSizes Sizes => sizes;

        public T Scale => scale;
    }
}
