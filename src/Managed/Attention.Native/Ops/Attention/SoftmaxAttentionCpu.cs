using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// CPU reference of <see cref="SoftmaxAttention"/>, generic over float and double. Each task owns one (batch, head, block of
/// query rows): its scores are one <c>RowBlock × L</c> matrix, computed and multiplied by GEMMs that read q, k, v in place
/// through their row strides (no transposes, no T×T buffers).
/// </summary>
internal static class SoftmaxAttentionCpu
{
    private const int RowBlock = 64;

    public static void Forward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse, SoftmaxAttention.Dims d,
        SoftmaxAttention.Layouts s, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int blocks = (d.Tq + RowBlock - 1) / RowBlock;
        T scale = T.CreateChecked(options.Scale);
        Parallel.For(0, d.B * d.H * blocks, task =>
        {
            int block = task % blocks, h = task / blocks % d.H, b = task / blocks / d.H;
            int r0 = block * RowBlock, rows = Math.Min(RowBlock, d.Tq - r0);
            var layout = new Layout(d, s, b, h, r0, rows, options.Causal);
            // Score blocks are large-object-heap sized: rent them rather than allocate one per task.
            var rented = ArrayPool<T>.Shared.Rent(rows * layout.Keys);
            var scores = rented.AsSpan(0, rows * layout.Keys);
            Scores(q, k, bias, layout, d, s, scale, scores);
            for (int i = 0; i < rows; i++)
            {
                var row = scores.Slice(i * layout.Keys, layout.Keys);
                int visible = layout.Visible(i);
                var live = row[..visible];
                T max = TensorPrimitives.Max<T>(live);
                TensorPrimitives.Subtract<T>(live, max, live);
                TensorPrimitives.Exp<T>(live, live);
                T sum = TensorPrimitives.Sum<T>(live);
                TensorPrimitives.Divide<T>(live, sum, live);
                row[visible..].Clear();
                lse[(((long)b * d.H) + h) * d.LseStride + r0 + i] = max + T.Log(sum);
            }
            // o = P v: the rows of o for this head and of v for this KV head lie a token stride apart (H·d_v, G·d_v row-major).
            int ldv = Ld(s.V), ldo = Ld(s.O);
            CpuGemm.Serial(false, false, rows, d.Dv, layout.Keys, T.One, scores, layout.Keys,
                v.Slice(layout.VBase, Span(layout.Keys, ldv, d.Dv)), ldv,
                T.Zero, o.Slice(layout.OBase, Span(rows, ldo, d.Dv)), ldo);
            ArrayPool<T>.Shared.Return(rented);
        });
    }

    public static void Backward<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse, PinnedBuffer<T> dO,
        PinnedBuffer<T> dq, PinnedBuffer<T> dk, PinnedBuffer<T> dv, PinnedBuffer<T> dbias, SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s, AttentionOptions options)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        T scale = T.CreateChecked(options.Scale);
        bool wantKv = !dk.IsEmpty || !dv.IsEmpty;
        // Each query head accumulates its own dk/dv; the heads sharing a KV head are summed afterwards in a fixed order.
        var dkHead = wantKv ? new T[d.B * d.H][] : null;
        var dvHead = wantKv ? new T[d.B * d.H][] : null;

        void Head(int b, int h)
        {
            T[]? dkh = wantKv ? new T[d.Length * d.Dqk] : null;
            T[]? dvh = wantKv ? new T[d.Length * d.Dv] : null;
            for (int r0 = 0; r0 < d.Tq; r0 += RowBlock)
            {
                int rows = Math.Min(RowBlock, d.Tq - r0);
                var layout = new Layout(d, s, b, h, r0, rows, options.Causal);
                int n = layout.Keys;
                var pRented = ArrayPool<T>.Shared.Rent(rows * n);
                var dpRented = ArrayPool<T>.Shared.Rent(rows * n);
                var p = pRented.AsSpan(0, rows * n);
                var dp = dpRented.AsSpan(0, rows * n);
                Scores(q, k, bias, layout, d, s, scale, p);
                for (int i = 0; i < rows; i++)
                {
                    var row = p.Slice(i * n, n);
                    int visible = layout.Visible(i);
                    T rowLse = lse[(((long)b * d.H) + h) * d.LseStride + r0 + i];
                    TensorPrimitives.Subtract<T>(row[..visible], rowLse, row[..visible]);
                    TensorPrimitives.Exp<T>(row[..visible], row[..visible]);
                    row[visible..].Clear();
                }
                int ldo = Ld(s.O), lddo = Ld(s.DO), ldv = Ld(s.V);
                long dOBase = s.DO.At(b, r0, h);
                var dOBlock = dO.Slice(dOBase, Span(rows, lddo, d.Dv));
                // dP = dO vᵀ, then dS = P ⊙ (dP − rowsum(dO ⊙ o)).
                CpuGemm.Serial(false, true, rows, n, d.Dv, T.One, dOBlock, lddo, v.Slice(layout.VBase, Span(n, ldv, d.Dv)), ldv, T.Zero, dp, n);
                for (int i = 0; i < rows; i++)
                {
                    T delta = TensorPrimitives.Dot<T>(dO.Slice(dOBase + ((long)i * lddo), d.Dv), o.Slice(layout.OBase + ((long)i * ldo), d.Dv));
                    var dsRow = dp.Slice(i * n, n);
                    TensorPrimitives.Subtract<T>(dsRow, delta, dsRow);
                    TensorPrimitives.Multiply<T>(dsRow, p.Slice(i * n, n), dsRow);
                    if (!dbias.IsEmpty)
                    {
                        var target = dbias.Slice((((long)h * d.Tq) + r0 + i) * d.Tk, n);
                        TensorPrimitives.Add<T>(target, dsRow, target);
                    }
                }
                int ldq = Ld(s.Q), ldk = Ld(s.K), lddq = Ld(s.DQ);
                if (!dq.IsEmpty)
                {
                    CpuGemm.Serial(false, false, rows, d.Dqk, n, scale, dp, n, k.Slice(layout.KBase, Span(n, ldk, d.Dqk)), ldk, T.One,
                        dq.Slice(s.DQ.At(b, r0, h), Span(rows, lddq, d.Dqk)), lddq);
                }
                if (wantKv)
                {
                    CpuGemm.Serial(true, false, n, d.Dqk, rows, scale, dp, n, q.Slice(layout.QBase, Span(rows, ldq, d.Dqk)), ldq, T.One, dkh, d.Dqk);
                    CpuGemm.Serial(true, false, n, d.Dv, rows, T.One, p, n, dOBlock, lddo, T.One, dvh, d.Dv);
                }
                ArrayPool<T>.Shared.Return(pRented);
                ArrayPool<T>.Shared.Return(dpRented);
            }
            if (wantKv)
            {
                dkHead![(b * d.H) + h] = dkh!;
                dvHead![(b * d.H) + h] = dvh!;
            }
        }

        if (dbias.IsEmpty)
        {
            Parallel.For(0, d.B * d.H, task => Head(task / d.H, task % d.H));
        }
        else
        {
            // dbias is shared by the batch: one task per head walks the batch in order.
            Parallel.For(0, d.H, h =>
            {
                for (int b = 0; b < d.B; b++)
                {
                    Head(b, h);
                }
            });
        }
        if (!wantKv)
        {
            return;
        }
        int groupSize = d.H / d.G;
        Parallel.For(0, d.B * d.G, task =>
        {
            int b = task / d.G, g = task % d.G;
            for (int hh = 0; hh < groupSize; hh++)
            {
                int h = (g * groupSize) + hh;
                var dkh = dkHead![(b * d.H) + h];
                var dvh = dvHead![(b * d.H) + h];
                for (int j = 0; j < d.Length; j++)
                {
                    if (!dk.IsEmpty)
                    {
                        var target = dk.Slice(s.DK.At(b, j, g), d.Dqk);
                        TensorPrimitives.Add<T>(target, dkh.AsSpan(j * d.Dqk, d.Dqk), target);
                    }
                    if (!dv.IsEmpty)
                    {
                        var target = dv.Slice(s.DV.At(b, j, g), d.Dv);
                        TensorPrimitives.Add<T>(target, dvh.AsSpan(j * d.Dv, d.Dv), target);
                    }
                }
            }
        });
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

    // scale · q kᵀ (+ bias) for one row block, with masked entries set to −∞.
    private static void Scores<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> bias, Layout layout, SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s, T scale, Span<T> scores)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int n = layout.Keys, ldq = Ld(s.Q), ldk = Ld(s.K);
        CpuGemm.Serial(false, true, layout.Rows, n, d.Dqk, scale, q.Slice(layout.QBase, Span(layout.Rows, ldq, d.Dqk)), ldq,
            k.Slice(layout.KBase, Span(n, ldk, d.Dqk)), ldk, T.Zero, scores, n);
        for (int i = 0; i < layout.Rows; i++)
        {
            var row = scores.Slice(i * n, n);
            if (!bias.IsEmpty)
            {
                TensorPrimitives.Add<T>(row, bias.Slice((((long)layout.Head * d.Tq) + layout.FirstRow + i) * d.Tk, n), row);
            }
            row[layout.Visible(i)..].Fill(T.NegativeInfinity);
        }
    }

    // The distance between a head's rows of consecutive tokens: a GEMM's leading dimension.
    private static int Ld(SoftmaxAttention.RowStrides strides) => checked((int)strides.Token);

    // Elements spanned by `rows` rows of `width` values placed `stride` apart.
    private static int Span(int rows, int stride, int width) => rows == 0 ? 0 : ((rows - 1) * stride) + width;

    /// <summary>Where one (batch, head, row block) task reads and writes, and which keys each of its rows sees.</summary>
    private readonly struct Layout
    {
        private readonly int _firstPosition;
        private readonly bool _causal;
        private readonly int _length;

        public Layout(SoftmaxAttention.Dims d, SoftmaxAttention.Layouts s, int b, int h, int r0, int rows, bool causal)
        {
            int g = h / (d.H / d.G);
            Head = h;
            FirstRow = r0;
            Rows = rows;
            _causal = causal;
            _length = d.Length;
            _firstPosition = d.Length - d.Tq + r0;
            Keys = causal ? Math.Min(d.Length, _firstPosition + rows) : d.Length;
            QBase = s.Q.At(b, r0, h);
            OBase = s.O.At(b, r0, h);
            KBase = s.K.At(b, 0, g);
            VBase = s.V.At(b, 0, g);
        }

        public int Head { get; }
        public int FirstRow { get; }
        public int Rows { get; }
        public int Keys { get; }
        public long QBase { get; }
        public long OBase { get; }
        public long KBase { get; }
        public long VBase { get; }

        public int Visible(int i) => _causal ? Math.Min(_length, _firstPosition + i + 1) : _length;
    }
}
