using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.Arm;
using System.Runtime.Intrinsics.X86;

namespace Attention.Native.Ops;

/// <summary>
/// The vector operations the CPU register kernels (<see cref="CpuGemm"/>, <see cref="SoftmaxAttentionCpu"/>) need,
/// implemented once per vector width (512, 256 bits, else <see cref="Vector{T}"/>) for float and
/// double. Kernels are generic over the implementation, so the JIT compiles one specialised copy per width.
/// </summary>
internal unsafe interface ISimd<T, TVec>
    where T : unmanaged
    where TVec : struct
{
    static abstract int Lanes { get; }

    /// <summary>Whether <see cref="MultiplyAdd"/> rounds once (hardware FMA).</summary>
    static abstract bool IsFused { get; }

    static abstract TVec Load(T* source);

    static abstract void Store(TVec value, T* target);

    static abstract TVec Broadcast(T value);

    static abstract TVec Add(TVec x, TVec y);

    static abstract TVec Subtract(TVec x, TVec y);

    static abstract TVec Multiply(TVec x, TVec y);

    /// <summary>x · y + addend.</summary>
    static abstract TVec MultiplyAdd(TVec x, TVec y, TVec addend);

    /// <summary>The larger of each pair, as the hardware's max instruction has it (no NaN or signed-zero fix-ups).</summary>
    static abstract TVec Max(TVec x, TVec y);

    /// <summary>2^x per lane; 2^−∞ = 0.</summary>
    static abstract TVec Exp2(TVec x);

    /// <summary>The sum of the lanes.</summary>
    static abstract T Sum(TVec x);

    /// <summary>The largest lane.</summary>
    static abstract T MaxAcross(TVec x);
}

/// <summary>
/// 2^x for float vectors: x = n + r with n the nearest integer, 2^r by a degree-6 polynomial fitted for relative error on
/// [−1/2, 1/2] (within 1e-7, about 1 ulp), times 2^n.
/// </summary>
/// <remarks>The runtime's Vector512.Exp(float) widens to double and costs about twice as much; attention's softmax runs it
/// once per score, so it works in base 2 (log2 e folded into the scores) and calls this.</remarks>
internal static class FloatExp2
{
    // Below this 2^x is under float's smallest normal: the 256-bit path returns 0 there (and 2^−∞ = 0 on both paths).
    public const float Lowest = -126f;
    public const float Highest = 128f;
    // Far enough below −149 (the smallest subnormal) that 2^x rounds to 0, and −∞ gives 0 rather than NaN.
    public const float Floor = -160f;
    public const float C1 = 6.931471825e-01f;
    public const float C2 = 2.402264774e-01f;
    public const float C3 = 5.550329015e-02f;
    public const float C4 = 9.618373588e-03f;
    public const float C5 = 1.339984825e-03f;
    public const float C6 = 1.537069766e-04f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<float> Exp2(Vector512<float> x)
    {
        if (Avx512F.IsSupported)
        {
            // scalef multiplies by 2^n without building the exponent bits: no overflow or underflow special cases.
            x = Vector512.MaxNative(x, Vector512.Create(Floor));
            var n = Vector512.Round(x);
            return Avx512F.Scale(Polynomial(x - n), n);
        }
        var under = Vector512.LessThan(x, Vector512.Create(Lowest));
        x = Vector512.MaxNative(Vector512.MinNative(x, Vector512.Create(Highest)), Vector512.Create(Lowest));
        var whole = Vector512.Round(x);
        var power = Vector512.ShiftLeft(Vector512.ConvertToInt32Native(whole) + Vector512.Create(127), 23).AsSingle();
        return Vector512.AndNot(Polynomial(x - whole) * power, under.AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<float> Exp2(Vector256<float> x)
    {
        var under = Vector256.LessThan(x, Vector256.Create(Lowest));
        x = Vector256.MaxNative(Vector256.MinNative(x, Vector256.Create(Highest)), Vector256.Create(Lowest));
        var whole = Vector256.Round(x);
        var r = x - whole;
        var p = MultiplyAdd(Vector256.Create(C6), r, Vector256.Create(C5));
        p = MultiplyAdd(p, r, Vector256.Create(C4));
        p = MultiplyAdd(p, r, Vector256.Create(C3));
        p = MultiplyAdd(p, r, Vector256.Create(C2));
        p = MultiplyAdd(p, r, Vector256.Create(C1));
        p = MultiplyAdd(p, r, Vector256<float>.One);
        var power = Vector256.ShiftLeft(Vector256.ConvertToInt32Native(whole) + Vector256.Create(127), 23).AsSingle();
        return Vector256.AndNot(p * power, under.AsSingle());
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector512<float> Polynomial(Vector512<float> r)
    {
        var p = Vector512.FusedMultiplyAdd(Vector512.Create(C6), r, Vector512.Create(C5));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C4));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C3));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C2));
        p = Vector512.FusedMultiplyAdd(p, r, Vector512.Create(C1));
        return Vector512.FusedMultiplyAdd(p, r, Vector512<float>.One);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Vector256<float> MultiplyAdd(Vector256<float> x, Vector256<float> y, Vector256<float> addend) =>
        Fma.IsSupported ? Vector256.FusedMultiplyAdd(x, y, addend) : (x * y) + addend;
}

internal readonly unsafe struct Simd512<T> : ISimd<T, Vector512<T>>
    where T : unmanaged
{
    public static int Lanes => Vector512<T>.Count;

    public static bool IsFused => true;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Load(T* source) => Vector512.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector512<T> value, T* target) => value.Store(target);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Broadcast(T value) => Vector512.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Add(Vector512<T> x, Vector512<T> y) => x + y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Subtract(Vector512<T> x, Vector512<T> y) => x - y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Multiply(Vector512<T> x, Vector512<T> y) => x * y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> MultiplyAdd(Vector512<T> x, Vector512<T> y, Vector512<T> addend) =>
        typeof(T) == typeof(float) ? Vector512.FusedMultiplyAdd(x.AsSingle(), y.AsSingle(), addend.AsSingle()).As<float, T>()
        : Vector512.FusedMultiplyAdd(x.AsDouble(), y.AsDouble(), addend.AsDouble()).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Max(Vector512<T> x, Vector512<T> y) => Vector512.MaxNative(x, y);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector512<T> Exp2(Vector512<T> x) =>
        typeof(T) == typeof(float) ? FloatExp2.Exp2(x.AsSingle()).As<float, T>() : Vector512.Exp(x.AsDouble() * Vector512.Create(Math.Log(2))).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Sum(Vector512<T> x) => Vector512.Sum(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T MaxAcross(Vector512<T> x) => Simd256<T>.MaxAcross(Vector256.MaxNative(x.GetLower(), x.GetUpper()));
}

internal readonly unsafe struct Simd256<T> : ISimd<T, Vector256<T>>
    where T : unmanaged
{
    public static int Lanes => Vector256<T>.Count;

    public static bool IsFused => Fma.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Load(T* source) => Vector256.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector256<T> value, T* target) => value.Store(target);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Broadcast(T value) => Vector256.Create(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Add(Vector256<T> x, Vector256<T> y) => x + y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Subtract(Vector256<T> x, Vector256<T> y) => x - y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Multiply(Vector256<T> x, Vector256<T> y) => x * y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> MultiplyAdd(Vector256<T> x, Vector256<T> y, Vector256<T> addend) =>
        !Fma.IsSupported ? (x * y) + addend
        : typeof(T) == typeof(float) ? Vector256.FusedMultiplyAdd(x.AsSingle(), y.AsSingle(), addend.AsSingle()).As<float, T>()
        : Vector256.FusedMultiplyAdd(x.AsDouble(), y.AsDouble(), addend.AsDouble()).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Max(Vector256<T> x, Vector256<T> y) => Vector256.MaxNative(x, y);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector256<T> Exp2(Vector256<T> x) =>
        typeof(T) == typeof(float) ? FloatExp2.Exp2(x.AsSingle()).As<float, T>() : Vector256.Exp(x.AsDouble() * Vector256.Create(Math.Log(2))).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Sum(Vector256<T> x) => Vector256.Sum(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T MaxAcross(Vector256<T> x)
    {
        var half = Vector128.MaxNative(x.GetLower(), x.GetUpper());
        T best = half.GetElement(0);
        for (int i = 1; i < Vector128<T>.Count; i++)
        {
            best = Vector128.MaxNative(Vector128.CreateScalarUnsafe(best), Vector128.CreateScalarUnsafe(half.GetElement(i))).ToScalar();
        }
        return best;
    }
}

internal readonly unsafe struct SimdVector<T> : ISimd<T, Vector<T>>
    where T : unmanaged
{
    public static int Lanes => Vector<T>.Count;

    public static bool IsFused => Fma.IsSupported || AdvSimd.IsSupported;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Load(T* source) => Vector.Load(source);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Store(Vector<T> value, T* target) => value.Store(target);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Broadcast(T value) => new(value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Add(Vector<T> x, Vector<T> y) => x + y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Subtract(Vector<T> x, Vector<T> y) => x - y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Multiply(Vector<T> x, Vector<T> y) => x * y;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> MultiplyAdd(Vector<T> x, Vector<T> y, Vector<T> addend) =>
        !IsFused ? (x * y) + addend
        : typeof(T) == typeof(float) ? Vector.FusedMultiplyAdd(x.As<T, float>(), y.As<T, float>(), addend.As<T, float>()).As<float, T>()
        : Vector.FusedMultiplyAdd(x.As<T, double>(), y.As<T, double>(), addend.As<T, double>()).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Max(Vector<T> x, Vector<T> y) => Vector.MaxNative(x, y);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Vector<T> Exp2(Vector<T> x) =>
        typeof(T) == typeof(float) ? Vector.Exp(x.As<T, float>() * new Vector<float>(MathF.Log(2))).As<float, T>()
        : Vector.Exp(x.As<T, double>() * new Vector<double>(Math.Log(2))).As<double, T>();

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T Sum(Vector<T> x) => Vector.Sum(x);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T MaxAcross(Vector<T> x)
    {
        T best = x[0];
        for (int i = 1; i < Vector<T>.Count; i++)
        {
            best = Vector.MaxNative(new Vector<T>(best), new Vector<T>(x[i]))[0];
        }
        return best;
    }
}
