namespace Attention.Native.Variants;

/// <summary>The arguments both PVT modules read alike.</summary>
internal static class PvtConfig
{
    /// <summary>The side of the module's square grid: <c>int(sqrt(num_patches))</c>, refused unless num_patches is a square.</summary>
    public static int? Side(OfficialConfig official)
    {
        if (official.Int("num_patches") is not { } patches)
        {
            return null;
        }
        int side = (int)Math.Round(Math.Sqrt(patches));
        if (side * side != patches)
        {
            official.Refuse("num_patches", "a perfect square (the modules build a √num_patches square grid)");
        }
        return side;
    }

    public static void RefuseScale(OfficialConfig official)
    {
        if (official.Has("qk_scale"))
        {
            official.Refuse("qk_scale", "null (the score scale is head_dim^-0.5)");
        }
    }
}
