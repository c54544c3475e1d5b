namespace Attention.Native.Inference;

/// <summary>How a <see cref="ServingPool"/> sizes its cache memory, all of it allocated when the pool is created.</summary>
/// <param name="TokenBudget">Cached tokens the pool holds across all its sequences (rounded up to whole pages).</param>
/// <param name="PageSize">Tokens per page: 16 by default (vLLM's), 64 as FlashMLA uses; any value ≥ 1.</param>
/// <param name="MaxSequences">Sequences alive at once (admitted, forked, not yet released); for a variant with a
/// per-sequence state (transnormer) this is the number of state slots.</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed record ServingPoolOptions(int TokenBudget, int PageSize = 16, int MaxSequences = 256);

/// <summary>A sequence of a <see cref="ServingPool"/>, from <see cref="ServingPool.Admit"/> or <see cref="ServingPool.Fork"/> until <see cref="ServingPool.Release"/>.</summary>
/// <param name="Value">The pool's number for it (never reused by the same pool).</param>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public readonly record struct SequenceId(long Value)
{
    /// <inheritdoc/>
    public override string ToString() => $"sequence {Value}";
}

/// <summary>
/// A step needed more cache pages (or sequence slots) than the pool has free. The pool is exactly as it was before the call:
/// no page was taken, no sequence changed.
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed class PoolExhaustedException : InvalidOperationException
{
    /// <summary>Creates the exception.</summary>
    public PoolExhaustedException(string message, int needed, int free)
        : base(message)
    {
        Needed = needed;
        Free = free;
    }

    /// <summary>Creates the exception with a message only.</summary>
    public PoolExhaustedException()
    {
    }

    /// <summary>Creates the exception with a message only.</summary>
    public PoolExhaustedException(string message)
        : base(message)
    {
    }

    /// <summary>Creates the exception with a message and a cause.</summary>
    public PoolExhaustedException(string message, Exception innerException)
        : base(message, innerException)
    {
    }

    /// <summary>Pages (or slots) the refused call needed.</summary>
    public int Needed { get; }

    /// <summary>Pages (or slots) that were free.</summary>
    public int Free { get; }
}
