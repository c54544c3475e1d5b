using System.Diagnostics.Tracing;

namespace Attention.Native.Runtime;

/// <summary>
/// The library's trace events, under the source name <see cref="SourceName"/>: listen in process with an
/// <see cref="EventListener"/>, or from outside with <c>dotnet-trace collect --providers Attention.Native</c>.
/// </summary>
/// <remarks>Thread safety: safe from any thread (EventSource writes are thread-safe).</remarks>
[EventSource(Name = SourceName)]
public sealed class AttentionNativeEventSource : EventSource
{
    /// <summary>The event source's name.</summary>
    public const string SourceName = "Attention.Native";

    /// <summary>Id of the <see cref="KernelCacheUnavailable"/> event.</summary>
    public const int KernelCacheUnavailableId = 1;

    private AttentionNativeEventSource()
    {
    }

    /// <summary>The one instance.</summary>
    public static AttentionNativeEventSource Log { get; } = new();

    /// <summary>
    /// Warning, written at most once per <see cref="KernelCompiler"/>: its on-disk cache in
    /// <paramref name="directory"/> is refused or cannot be written, so kernels are compiled again by every
    /// process. <paramref name="reason"/> says why; <see cref="KernelCompiler.CacheWarning"/> holds the same text.
    /// </summary>
    [Event(KernelCacheUnavailableId, Level = EventLevel.Warning, Message = "kernel cache {0}: {1}")]
    public void KernelCacheUnavailable(string directory, string reason) => WriteEvent(KernelCacheUnavailableId, directory, reason);
}
