namespace Attention.Native;

/// <summary>
/// Where the tokens of a batch of sequences lie in a paged cache (vLLM's block tables): the cache is a pool of pages of
/// <see cref="PageSize"/> tokens each, and token <c>t</c> of sequence <c>s</c> sits in slot <c>t mod PageSize</c> of page
/// <c>Pages[s·PagesPerSequence + t / PageSize]</c>. <see cref="Length"/> is how many tokens of each sequence are valid;
/// only the first <c>ceil(Length(s) / PageSize)</c> entries of a sequence's row are read (the rest are padding, −1 by
/// convention).
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed class PageTable
{
    private readonly int[] _pages;
    private readonly int[] _lengths;

    /// <summary>Creates a table; <paramref name="pages"/> is row-major <c>[lengths.Length, pagesPerSequence]</c>.</summary>
    /// <param name="pageSize">Tokens per page, ≥ 1.</param>
    /// <param name="pagesPerSequence">Entries per sequence's row, ≥ 1.</param>
    /// <param name="pages">The page of each entry (≥ 0 where a sequence uses it).</param>
    /// <param name="lengths">Valid tokens of each sequence, each ≥ 1 and at most <c>pagesPerSequence · pageSize</c>.</param>
    /// <exception cref="ArgumentException">The first rule broken, naming the argument, the expected and the actual value.</exception>
    public PageTable(int pageSize, int pagesPerSequence, ReadOnlySpan<int> pages, ReadOnlySpan<int> lengths)
    {
        if (pageSize < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(pageSize), pageSize, $"pageSize: expected ≥ 1, actual {pageSize}");
        }
        if (pagesPerSequence < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(pagesPerSequence), pagesPerSequence, $"pagesPerSequence: expected ≥ 1, actual {pagesPerSequence}");
        }
        if (lengths.IsEmpty)
        {
            throw new ArgumentException("lengths: expected at least one sequence, actual none", nameof(lengths));
        }
        if (pages.Length != (long)lengths.Length * pagesPerSequence)
        {
            throw new ArgumentException($"pages: expected {(long)lengths.Length * pagesPerSequence} entries ({lengths.Length} sequences × {pagesPerSequence}), actual {pages.Length}", nameof(pages));
        }
        for (int s = 0; s < lengths.Length; s++)
        {
            if (lengths[s] < 1 || lengths[s] > (long)pagesPerSequence * pageSize)
            {
                throw new ArgumentException($"lengths[{s}]: expected a length in [1, {(long)pagesPerSequence * pageSize}] ({pagesPerSequence} pages of {pageSize}), actual {lengths[s]}", nameof(lengths));
            }
            int used = (lengths[s] + pageSize - 1) / pageSize;
            for (int i = 0; i < used; i++)
            {
                if (pages[(s * pagesPerSequence) + i] < 0)
                {
                    throw new ArgumentException($"pages[{(s * pagesPerSequence) + i}]: expected a page ≥ 0 (entry {i} of sequence {s}, which holds {lengths[s]} tokens), actual {pages[(s * pagesPerSequence) + i]}", nameof(pages));
                }
            }
        }
        PageSize = pageSize;
        PagesPerSequence = pagesPerSequence;
        _pages = pages.ToArray();
        _lengths = lengths.ToArray();
    }

    /// <summary>Tokens per page.</summary>
    public int PageSize { get; }

    /// <summary>Entries in each sequence's row of <see cref="Pages"/>.</summary>
    public int PagesPerSequence { get; }

    /// <summary>The number of sequences.</summary>
    public int Count => _lengths.Length;

    /// <summary>The row-major <c>[Count, PagesPerSequence]</c> page entries.</summary>
    public ReadOnlySpan<int> Pages => _pages;

    /// <summary>Each sequence's valid tokens.</summary>
    public ReadOnlySpan<int> Lengths => _lengths;

    /// <summary>The longest sequence's valid tokens.</summary>
    public int MaxLength => _lengths.Max();

    /// <summary>The valid tokens of sequence <paramref name="sequence"/>.</summary>
    public int Length(int sequence) => _lengths[sequence];

    /// <summary>The pool slot (page · PageSize + offset) of token <paramref name="position"/> of sequence <paramref name="sequence"/>.</summary>
    public int Slot(int sequence, int position) => (_pages[(sequence * PagesPerSequence) + (position / PageSize)] * PageSize) + (position % PageSize);

    /// <summary>
    /// Checks every page a sequence uses lies in a pool of <paramref name="poolPages"/> pages of this page size, throwing an
    /// <see cref="ArgumentException"/> named <paramref name="name"/> for the first that does not.
    /// </summary>
    internal void CheckFits(int poolPages, int poolPageSize, string name)
    {
        if (poolPageSize != PageSize)
        {
            throw new ArgumentException($"{name}: expected pages of {poolPageSize} tokens (the pool's), actual {PageSize}", name);
        }
        for (int s = 0; s < Count; s++)
        {
            int used = (_lengths[s] + PageSize - 1) / PageSize;
            for (int i = 0; i < used; i++)
            {
                int page = _pages[(s * PagesPerSequence) + i];
                if (page >= poolPages)
                {
                    throw new ArgumentException($"{name}: expected pages in [0, {poolPages}) (the pool's), actual page {page} at entry {i} of sequence {s}", name);
                }
            }
        }
    }
}
