using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;

namespace Attention.Native.Ops;

/// <summary>
/// The in-place forward of <see cref="SoftmaxAttentionCpu"/> for few queries (a decode step, a short chunk): per (batch, head,
/// block of up to 64 query rows) one <c>rows × L</c> score block computed and multiplied by GEMMs that read q, k and v where
/// they lie through their row strides. The tiled forward packs k and v once per KV head, which a handful of query rows
/// cannot pay back (a 1-query step over 4096 keys ran 5× slower packed).
/// </summary>
internal static unsafe partial class SoftmaxAttentionCpu
{
    private const int RowBlock = 64;

    /// <summary>Below this many query rows per KV head (T_q · H/G), the forward reads k and v in place instead of packing them.</summary>
    internal const int InPlaceQueryRows = 16;

    private static void ForwardInPlace<T>(PinnedBuffer<T> q, PinnedBuffer<T> k, PinnedBuffer<T> v, PinnedBuffer<T> bias, PinnedBuffer<T> o, PinnedBuffer<T> lse, SoftmaxAttention.Dims d,
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
