namespace Attention.Native.Ops;

/// <summary>
/// Attention over paged caches (vLLM's PagedAttention; <see cref="PageTable"/>): a pool tensor <c>[P, page_size, …row]</c>
/// holds the cached rows of many sequences in fixed-size pages, and a page table says which pages, in order, make up each
/// sequence. The queries are a ragged batch <c>[1, N_q, …]</c> (<see cref="SequenceLayout"/>): sequence s has
/// <c>L_q(s)</c> new queries and <c>table.Length(s)</c> cached keys, the new tokens' own included, and query i of it sits at
/// position <c>table.Length(s) − L_q(s) + i</c> and sees the keys up to its own (causal). A decode step of many sequences is
/// one query per sequence; a chunk of a prompt is several. Each form below is the dense op of the same name on the gathered
/// keys: softmax attention (<see cref="SoftmaxAttention"/>), MLA's absorbed latent attention (<see cref="LatentAttention"/>)
/// and TPA's factor attention (<see cref="TpaDecode"/>). Inference only (no backward).
/// </summary>
/// <remarks>Thread safety: the entries are stateless. On the CPU backend calls may run on many threads at once as long as no two write the same tensor; the CUDA backend's ops share one stream and scratch buffer, so calls of these ops on one CUDA backend must come from one thread at a time. Stream rules: on the CUDA backend a call queues its work on the tensors' backend stream (<see cref="CudaBackend.Stream"/>), after everything queued before it, and may return before the GPU has run it; reading an output back (<c>CopyTo</c>, <c>ToArray</c>) waits for it, and so does the backend's <c>Synchronize()</c>. Inputs may be disposed as soon as the call returns (their memory is reused only by later work on that stream). On the CPU backend the call has finished when it returns.</remarks>
public static class PagedAttention
{
    /// <summary>
    /// Writes the rows of <paramref name="values"/> <c>[1, N, …row]</c>, the packed new tokens of <paramref name="sequences"/>,
    /// into <paramref name="pages"/> <c>[P, page_size, …row]</c>: token i of sequence s goes to position
    /// <c>StartPosition(s) + i</c> of that sequence in <paramref name="table"/> (which must already count it).
    /// </summary>
    public static void Write(Tensor values, Tensor pages, SequenceLayout sequences, PageTable table)
    {
        Check.Usable(values, nameof(values));
        Check.DTypeSupported(values, nameof(values));
        Check.Compatible(values, nameof(values), pages, nameof(pages));
        ArgumentNullException.ThrowIfNull(sequences);
        ArgumentNullException.ThrowIfNull(table);
        Rope.CheckPacked(values, nameof(values), sequences);
        CheckPool(pages, nameof(pages), values.Shape, 2, table);
        CheckCount(sequences, nameof(sequences), table);
        var slots = new int[sequences.TokenCount];
        for (int s = 0; s < sequences.Count; s++)
        {
            int end = sequences.StartPosition(s) + sequences.Length(s);
            if (end > table.Length(s))
            {
                throw new ArgumentException($"sequences: expected sequence {s}'s tokens to end within its {table.Length(s)} table positions, actual positions {sequences.StartPosition(s)} … {end - 1}", nameof(sequences));
            }
            for (int i = 0; i < sequences.Length(s); i++)
            {
                slots[sequences.Start(s) + i] = table.Slot(s, sequences.StartPosition(s) + i);
            }
        }
        values.Backend.PagedWrite(values, pages, slots);
    }

    /// <summary>Copies page <paramref name="source"/> of <paramref name="pages"/> <c>[P, page_size, …row]</c> onto page <paramref name="destination"/> (copy on write of a shared page).</summary>
    public static void CopyPage(Tensor pages, int source, int destination)
    {
        Check.Usable(pages, nameof(pages));
        if (pages.Shape.Rank < 2)
        {
            throw new ArgumentException($"pages: expected [P, page_size, …row], actual {pages.Shape}", nameof(pages));
        }
        ArgumentOutOfRangeException.ThrowIfNegative(source);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(source, pages.Shape[0]);
        ArgumentOutOfRangeException.ThrowIfNegative(destination);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(destination, pages.Shape[0]);
        if (source != destination)
        {
            pages.Backend.PagedCopy(pages, source, destination);
        }
    }

    /// <summary>
    /// Softmax attention of <paramref name="q"/> <c>[1, N_q, H, d_qk]</c> over paged keys <paramref name="kPages"/>
    /// <c>[P, page_size, G, d_qk]</c> and values <paramref name="vPages"/> <c>[P, page_size, G, d_v]</c> (H a multiple of G).
    /// Returns o <c>[1, N_q, H, d_v]</c>.
    /// </summary>
    public static Tensor Forward(Tensor q, Tensor kPages, Tensor vPages, SequenceLayout queries, PageTable table, double scale)
    {
        CheckQueries(q, nameof(q), queries, table);
        Check.Compatible(q, nameof(q), kPages, nameof(kPages));
        Check.Compatible(q, nameof(q), vPages, nameof(vPages));
        Check.Rank(kPages, 4, nameof(kPages), "[P, page_size, G, d_qk]");
        Check.Rank(vPages, 4, nameof(vPages), "[P, page_size, G, d_v]");
        table.CheckFits(kPages.Shape[0], kPages.Shape[1], nameof(table));
        int heads = q.Shape[2], kvHeads = kPages.Shape[2];
        Check.Shape(kPages, new Shape(kPages.Shape[0], table.PageSize, kvHeads, q.Shape[3]), nameof(kPages));
        Check.Shape(vPages, new Shape(kPages.Shape[0], table.PageSize, kvHeads, vPages.Shape[3]), nameof(vPages));
        if (kvHeads == 0 || heads % kvHeads != 0)
        {
            throw new ArgumentException($"kPages: expected a KV head count dividing the {heads} query heads, actual {kvHeads}", nameof(kPages));
        }
        CheckScale(scale);
        var shape = new Shape(1, q.Shape[1], heads, vPages.Shape[3]);
        return q.Backend.Create(shape, q.DType, o => q.Backend.PagedSoftmaxAttention(q, kPages, vPages, o, queries, table, scale));
    }

    /// <summary>
    /// MLA's absorbed attention (<see cref="LatentAttention.Decode"/>) of <paramref name="q"/> <c>[1, N_q, H, d_n+d_r]</c> over
    /// the paged latents <paramref name="latentPages"/> <c>[P, page_size, d_c+d_r]</c>, with <paramref name="kvUp"/> =
    /// <c>w_kv_b [H·(d_n+d_v), d_c]</c>. Returns o <c>[1, N_q, H, d_v]</c>.
    /// </summary>
    public static Tensor Latent(Tensor q, Tensor latentPages, Tensor kvUp, int nopeDim, SequenceLayout queries, PageTable table, double scale)
    {
        CheckQueries(q, nameof(q), queries, table);
        Check.Compatible(q, nameof(q), latentPages, nameof(latentPages));
        Check.Rank(latentPages, 3, nameof(latentPages), "[P, page_size, d_c+d_r]");
        Check.Compatible(q, nameof(q), kvUp, nameof(kvUp));
        Check.Rank(kvUp, 2, nameof(kvUp), "[H·(d_n+d_v), d_c]");
        table.CheckFits(latentPages.Shape[0], latentPages.Shape[1], nameof(table));
        int heads = q.Shape[2], ropeDim = q.Shape[3] - nopeDim, latent = kvUp.Shape[1];
        if (nopeDim < 0 || ropeDim < 0)
        {
            throw new ArgumentOutOfRangeException(nameof(nopeDim), nopeDim, $"nopeDim: expected a width in [0, {q.Shape[3]}], actual {nopeDim}");
        }
        if (kvUp.Shape[0] % heads != 0 || kvUp.Shape[0] / heads <= nopeDim)
        {
            throw new ArgumentException($"kvUp: expected H·(d_n+d_v) rows with H = {heads}, d_n = {nopeDim}, d_v ≥ 1, actual {kvUp.Shape}", nameof(kvUp));
        }
        Check.Shape(latentPages, new Shape(latentPages.Shape[0], table.PageSize, latent + ropeDim), nameof(latentPages));
        CheckScale(scale);
        int dv = (kvUp.Shape[0] / heads) - nopeDim;
        var shape = new Shape(1, q.Shape[1], heads, dv);
        return q.Backend.Create(shape, q.DType, o => q.Backend.PagedLatentAttention(q, latentPages, kvUp, o, nopeDim, queries, table, scale));
    }

    /// <summary>
    /// TPA's factor attention (<see cref="TpaDecode"/>) of the query factors <paramref name="aq"/> <c>[1, N_q, H, R_q]</c> and
    /// <paramref name="bq"/> <c>[1, N_q, R_q, d]</c> over the paged key and value factors <c>[P, page_size, H, R_k]</c>,
    /// <c>[P, page_size, R_k, d]</c>, <c>[P, page_size, H, R_v]</c>, <c>[P, page_size, R_v, d]</c>. Returns o <c>[1, N_q, H, d]</c>.
    /// </summary>
    public static Tensor Tpa(Tensor aq, Tensor bq, Tensor akPages, Tensor bkPages, Tensor avPages, Tensor bvPages, SequenceLayout queries, PageTable table)
    {
        CheckQueries(aq, nameof(aq), queries, table);
        foreach (var (t, name) in new[] { (bq, nameof(bq)), (akPages, nameof(akPages)), (bkPages, nameof(bkPages)), (avPages, nameof(avPages)), (bvPages, nameof(bvPages)) })
        {
            Check.Compatible(aq, nameof(aq), t, name);
            Check.Rank(t, 4, name, "rank 4");
        }
        int n = aq.Shape[1], heads = aq.Shape[2], queryRank = aq.Shape[3], width = bq.Shape[3];
        Check.Shape(bq, new Shape(1, n, queryRank, width), nameof(bq));
        table.CheckFits(akPages.Shape[0], akPages.Shape[1], nameof(table));
        int pool = akPages.Shape[0], keyRank = akPages.Shape[3], valueRank = avPages.Shape[3];
        Check.Shape(akPages, new Shape(pool, table.PageSize, heads, keyRank), nameof(akPages));
        Check.Shape(bkPages, new Shape(pool, table.PageSize, keyRank, width), nameof(bkPages));
        Check.Shape(avPages, new Shape(pool, table.PageSize, heads, valueRank), nameof(avPages));
        Check.Shape(bvPages, new Shape(pool, table.PageSize, valueRank, width), nameof(bvPages));
        var shape = new Shape(1, n, heads, width);
        return aq.Backend.Create(shape, aq.DType, o => aq.Backend.PagedTpaAttention(aq, bq, akPages, bkPages, avPages, bvPages, o, queries, table));
    }

    // q [1, N_q, …] packs the queries; the layout and the table have the same sequences; no sequence has more queries than keys.
    private static void CheckQueries(Tensor q, string name, SequenceLayout queries, PageTable table)
    {
        Check.Usable(q, name);
        Check.DTypeSupported(q, name);
        ArgumentNullException.ThrowIfNull(queries);
        ArgumentNullException.ThrowIfNull(table);
        Check.Rank(q, 4, name, "[1, N_q, H, …]");
        Rope.CheckPacked(q, name, queries);
        CheckCount(queries, nameof(queries), table);
        for (int s = 0; s < queries.Count; s++)
        {
            if (queries.Length(s) > table.Length(s))
            {
                throw new ArgumentException($"queries: expected at most {table.Length(s)} queries in sequence {s} (its cached keys, new ones included), actual {queries.Length(s)}", nameof(queries));
            }
        }
    }

    private static void CheckCount(SequenceLayout sequences, string name, PageTable table)
    {
        if (sequences.Count != table.Count)
        {
            throw new ArgumentException($"{name}: expected {table.Count} sequences (the page table's), actual {sequences.Count}", name);
        }
    }

    // pages [P, page_size, …row] with the row of values [1, N, …row].
    private static void CheckPool(Tensor pages, string name, Shape values, int rowAxis, PageTable table)
    {
        var dims = new int[values.Rank];
        dims[0] = pages.Shape.Rank == values.Rank ? pages.Shape[0] : 0;
        dims[1] = table.PageSize;
        for (int i = rowAxis; i < values.Rank; i++)
        {
            dims[i] = values[i];
        }
        Check.Shape(pages, new Shape(dims), name);
        table.CheckFits(pages.Shape[0], pages.Shape[1], nameof(table));
    }

    private static void CheckScale(double scale)
    {
        if (!(scale > 0) || !double.IsFinite(scale))
        {
            throw new ArgumentOutOfRangeException(nameof(scale), scale, $"scale: expected a finite value > 0, actual {scale}");
        }
    }
}
