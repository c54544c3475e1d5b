using Attention.Native.Ops;

namespace Attention.Native;

// The op-table entries of PagedAttention: the backend's declaration and the CPU backend's dispatch.
public abstract partial class Backend
{
    internal virtual void PagedWrite(Tensor values, Tensor pages, int[] slots) => throw Unsupported(nameof(PagedAttention));

    internal virtual void PagedCopy(Tensor pages, int source, int destination) => throw Unsupported(nameof(PagedAttention));

    internal virtual void PagedSoftmaxAttention(Tensor q, Tensor kPages, Tensor vPages, Tensor o, SequenceLayout queries, PageTable table, double scale) =>
        throw Unsupported(nameof(PagedAttention));

    internal virtual void PagedLatentAttention(Tensor q, Tensor latentPages, Tensor kvUp, Tensor o, int nopeDim, SequenceLayout queries, PageTable table, double scale) =>
        throw Unsupported(nameof(PagedAttention));

    internal virtual void PagedTpaAttention(Tensor aq, Tensor bq, Tensor akPages, Tensor bkPages, Tensor avPages, Tensor bvPages, Tensor o, SequenceLayout queries, PageTable table) =>
        throw Unsupported(nameof(PagedAttention));
}

// The CPU reference: each sequence's pages are gathered into a contiguous cache and the dense op of the same form runs on it.
public sealed partial class CpuBackend
{
    internal override void PagedWrite(Tensor values, Tensor pages, int[] slots)
    {
        int rowBytes = checked((int)(values.ByteCount / Math.Max(1, values.Shape[1])));
        var source = ((HostTensor)values).RawBytes;
        var target = ((HostTensor)pages).Bytes;
        for (int t = 0; t < slots.Length; t++)
        {
            source.Slice(t * rowBytes, rowBytes).CopyTo(target.Slice(checked(slots[t] * rowBytes), rowBytes));
        }
    }

    internal override void PagedCopy(Tensor pages, int source, int destination)
    {
        int pageBytes = checked((int)(pages.ByteCount / pages.Shape[0]));
        var bytes = ((HostTensor)pages).Bytes;
        bytes.Slice(source * pageBytes, pageBytes).CopyTo(bytes.Slice(destination * pageBytes, pageBytes));
    }

    internal override void PagedSoftmaxAttention(Tensor q, Tensor kPages, Tensor vPages, Tensor o, SequenceLayout queries, PageTable table, double scale)
    {
        for (int s = 0; s < queries.Count; s++)
        {
            using var k = GatherPages(kPages, table, s);
            using var v = GatherPages(vPages, table, s);
            var qs = TokenRows(q, queries.Start(s), queries.Length(s));
            using var lse = Zeros(new Shape(1, q.Shape[2], queries.Length(s)), SoftmaxAttention.LseType(q.DType));
            SoftmaxAttentionForward(qs, k, v, null, TokenRows(o, queries.Start(s), queries.Length(s)), lse, new AttentionOptions(scale, Causal: true));
        }
    }

    internal override void PagedLatentAttention(Tensor q, Tensor latentPages, Tensor kvUp, Tensor o, int nopeDim, SequenceLayout queries, PageTable table, double scale)
    {
        for (int s = 0; s < queries.Count; s++)
        {
            using var cache = GatherPages(latentPages, table, s);
            LatentAttentionDecode(TokenRows(q, queries.Start(s), queries.Length(s)), cache, kvUp, TokenRows(o, queries.Start(s), queries.Length(s)), nopeDim, table.Length(s), scale);
        }
    }

    internal override void PagedTpaAttention(Tensor aq, Tensor bq, Tensor akPages, Tensor bkPages, Tensor avPages, Tensor bvPages, Tensor o, SequenceLayout queries, PageTable table)
    {
        for (int s = 0; s < queries.Count; s++)
        {
            using var ak = GatherPages(akPages, table, s);
            using var bk = GatherPages(bkPages, table, s);
            using var av = GatherPages(avPages, table, s);
            using var bv = GatherPages(bvPages, table, s);
            int start = queries.Start(s), count = queries.Length(s);
            TpaDecodeForward(TokenRows(aq, start, count), TokenRows(bq, start, count), ak, bk, av, bv, table.Length(s), TokenRows(o, start, count));
        }
    }

    // The first table.Length(s) rows of sequence s, [1, length, …row], copied out of its pages in order.
    private HostTensor GatherPages(Tensor pages, PageTable table, int s)
    {
        int length = table.Length(s);
        var dims = new int[pages.Shape.Rank];
        dims[0] = 1;
        dims[1] = length;
        for (int i = 2; i < dims.Length; i++)
        {
            dims[i] = pages.Shape[i];
        }
        var gathered = (HostTensor)Zeros(new Shape(dims), pages.DType);
        int rowBytes = checked((int)(pages.ByteCount / ((long)pages.Shape[0] * pages.Shape[1])));
        var source = ((HostTensor)pages).RawBytes;
        var target = gathered.RawBytes;
        for (int t = 0; t < length; t++)
        {
            source.Slice(checked(table.Slot(s, t) * rowBytes), rowBytes).CopyTo(target.Slice(t * rowBytes, rowBytes));
        }
        return gathered;
    }
}
