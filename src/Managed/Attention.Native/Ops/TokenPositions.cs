namespace Attention.Native.Ops;

/// <summary>
/// The positions RoPE and LRPE rotate tokens by: <c>Offset + t</c> for row t of a dense <c>[B, T, …]</c> tensor (every
/// sequence of the batch alike), or one position per packed token of a ragged batch (<see cref="SequenceLayout.TokenPositions"/>).
/// </summary>
internal readonly record struct TokenPositions(int Offset, int[]? PerToken)
{
    public static implicit operator TokenPositions(int offset) => new(offset, null);

    /// <summary>The positions of a ragged batch's packed tokens.</summary>
    public static TokenPositions Of(SequenceLayout sequences) => new(0, sequences.TokenPositions());

    /// <summary>The position of row <paramref name="t"/> along the token axis.</summary>
    public int At(int t) => PerToken is null ? Offset + t : PerToken[t];
}
