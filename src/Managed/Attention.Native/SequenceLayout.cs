using System.Globalization;

namespace Attention.Native;

/// <summary>
/// A ragged batch: sequences of different lengths packed one after another along the token axis of a <c>[1, N, …]</c>
/// tensor, as <c>cu_seqlens</c> describes them in flash-attention and vLLM. Sequence <c>s</c> owns tokens
/// <c>Offsets[s] … Offsets[s + 1] − 1</c>; its first token sits at position <see cref="StartPosition"/> (0 unless the
/// sequence continues a cached prefix), so token <c>t</c> of it has position <c>StartPosition(s) + t − Offsets[s]</c>.
/// Every sequence holds at least one token.
/// </summary>
/// <remarks>Thread safety: immutable; safe to share between threads.</remarks>
public sealed class SequenceLayout : IEquatable<SequenceLayout>
{
    private readonly int[] _offsets;
    private readonly int[] _starts;

    private SequenceLayout(int[] offsets, int[] starts)
    {
        _offsets = offsets;
        _starts = starts;
        MaxLength = 0;
        for (int s = 0; s + 1 < offsets.Length; s++)
        {
            MaxLength = Math.Max(MaxLength, offsets[s + 1] - offsets[s]);
        }
    }

    /// <summary>The number of sequences.</summary>
    public int Count => _offsets.Length - 1;

    /// <summary>N, the tokens of all sequences together.</summary>
    public int TokenCount => _offsets[^1];

    /// <summary>The longest sequence's length.</summary>
    public int MaxLength { get; }

    /// <summary>The <see cref="Count"/> + 1 offsets: 0, then each sequence's end.</summary>
    public ReadOnlySpan<int> Offsets => _offsets;

    /// <summary>Each sequence's <see cref="StartPosition"/>.</summary>
    public ReadOnlySpan<int> StartPositions => _starts;

    /// <summary>True when every sequence starts at position 0 (a training batch, or prompts entering empty caches).</summary>
    public bool StartsAtZero => Array.TrueForAll(_starts, p => p == 0);

    /// <summary>A layout of sequences of <paramref name="lengths"/>, each ≥ 1, starting at position 0.</summary>
    /// <exception cref="ArgumentException">No length, a length below 1, or a total above <see cref="int.MaxValue"/>.</exception>
    public static SequenceLayout FromLengths(params ReadOnlySpan<int> lengths)
    {
        if (lengths.IsEmpty)
        {
            throw new ArgumentException("lengths: expected at least one sequence, actual none", nameof(lengths));
        }
        var offsets = new int[lengths.Length + 1];
        long total = 0;
        for (int s = 0; s < lengths.Length; s++)
        {
            if (lengths[s] < 1)
            {
                throw new ArgumentException($"lengths[{s}]: expected a length ≥ 1, actual {lengths[s]}", nameof(lengths));
            }
            total += lengths[s];
            if (total > int.MaxValue)
            {
                throw new ArgumentException($"lengths: expected at most {int.MaxValue} tokens in all, actual more than that by sequence {s}", nameof(lengths));
            }
            offsets[s + 1] = (int)total;
        }
        return new SequenceLayout(offsets, new int[lengths.Length]);
    }

    /// <summary>
    /// A layout from <c>cu_seqlens</c>-style <paramref name="offsets"/> (0, then each sequence's end) over
    /// <paramref name="tokenCount"/> packed tokens: the offsets must start at 0, rise strictly (no empty sequence) and end at
    /// <paramref name="tokenCount"/>.
    /// </summary>
    /// <exception cref="ArgumentException">The first offset that breaks a rule, with the expected and actual value.</exception>
    public static SequenceLayout FromOffsets(ReadOnlySpan<int> offsets, int tokenCount)
    {
        if (offsets.Length < 2)
        {
            throw new ArgumentException($"offsets: expected at least 2 values (0 and the end of the first sequence), actual {offsets.Length}", nameof(offsets));
        }
        if (offsets[0] != 0)
        {
            throw new ArgumentException($"offsets[0]: expected 0, actual {offsets[0]}", nameof(offsets));
        }
        for (int s = 1; s < offsets.Length; s++)
        {
            if (offsets[s] <= offsets[s - 1])
            {
                throw new ArgumentException($"offsets[{s}]: expected a value > offsets[{s - 1}] = {offsets[s - 1]} (offsets rise strictly: every sequence holds a token), actual {offsets[s]}", nameof(offsets));
            }
        }
        if (offsets[^1] != tokenCount)
        {
            throw new ArgumentException($"offsets[{offsets.Length - 1}]: expected the token count {tokenCount} (the offsets end where the packed tokens do), actual {offsets[^1]}", nameof(offsets));
        }
        return new SequenceLayout(offsets.ToArray(), new int[offsets.Length - 1]);
    }

    /// <summary>
    /// The same sequences with their first tokens at <paramref name="startPositions"/> (each ≥ 0): the positions RoPE and
    /// LRPE rotate by when each sequence continues a prefix of that many cached tokens.
    /// </summary>
    public SequenceLayout WithStartPositions(ReadOnlySpan<int> startPositions)
    {
        if (startPositions.Length != Count)
        {
            throw new ArgumentException($"startPositions: expected {Count} values (one per sequence), actual {startPositions.Length}", nameof(startPositions));
        }
        for (int s = 0; s < Count; s++)
        {
            if (startPositions[s] < 0 || (long)startPositions[s] + Length(s) > int.MaxValue)
            {
                throw new ArgumentException($"startPositions[{s}]: expected a value in [0, {int.MaxValue - Length(s)}], actual {startPositions[s]}", nameof(startPositions));
            }
        }
        return new SequenceLayout(_offsets, startPositions.ToArray());
    }

    /// <summary>The first packed token of sequence <paramref name="sequence"/>.</summary>
    public int Start(int sequence) => _offsets[CheckIndex(sequence)];

    /// <summary>The number of tokens of sequence <paramref name="sequence"/>.</summary>
    public int Length(int sequence) => _offsets[CheckIndex(sequence) + 1] - _offsets[sequence];

    /// <summary>The position of sequence <paramref name="sequence"/>'s first token.</summary>
    public int StartPosition(int sequence) => _starts[CheckIndex(sequence)];

    /// <summary>The position of every packed token: <c>StartPosition(s) + t − Offsets[s]</c>.</summary>
    public int[] TokenPositions()
    {
        var positions = new int[TokenCount];
        for (int s = 0; s < Count; s++)
        {
            for (int t = _offsets[s]; t < _offsets[s + 1]; t++)
            {
                positions[t] = _starts[s] + t - _offsets[s];
            }
        }
        return positions;
    }

    /// <inheritdoc/>
    public bool Equals(SequenceLayout? other) =>
        other is not null && _offsets.AsSpan().SequenceEqual(other._offsets) && _starts.AsSpan().SequenceEqual(other._starts);

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as SequenceLayout);

    /// <inheritdoc/>
    public override int GetHashCode()
    {
        var hash = default(HashCode);
        foreach (int o in _offsets)
        {
            hash.Add(o);
        }
        foreach (int p in _starts)
        {
            hash.Add(p);
        }
        return hash.ToHashCode();
    }

    /// <summary>The lengths, and the start positions where any is not 0, e.g. <c>[3, 5, 1]</c> or <c>[3, 5, 1] from [0, 7, 2]</c>.</summary>
    public override string ToString()
    {
        var lengths = Enumerable.Range(0, Count).Select(s => Length(s).ToString(CultureInfo.InvariantCulture));
        string text = $"[{string.Join(", ", lengths)}]";
        return StartsAtZero ? text : $"{text} from [{string.Join(", ", _starts.Select(p => p.ToString(CultureInfo.InvariantCulture)))}]";
    }

    private int CheckIndex(int sequence)
    {
        if ((uint)sequence >= (uint)Count)
        {
            throw new ArgumentOutOfRangeException(nameof(sequence), sequence, $"sequence: expected an index in [0, {Count}), actual {sequence}");
        }
        return sequence;
    }
}
