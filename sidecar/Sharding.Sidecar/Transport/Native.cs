using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace Sharding.Sidecar.Transport;

/// <summary>The Linux calls the epoll transport makes (libc), and errno to <see cref="SocketError"/>.</summary>
internal static unsafe partial class Native
{
    public const int EAGAIN = 11;
    public const int EINTR = 4;
    public const int EINPROGRESS = 115;

    public const uint EPOLLIN = 0x001;
    public const uint EPOLLOUT = 0x004;
    public const uint EPOLLERR = 0x008;
    public const uint EPOLLHUP = 0x010;
    public const uint EPOLLRDHUP = 0x2000;
    public const uint EPOLLET = 1u << 31;

    private const int EPOLL_CTL_ADD = 1;
    private const int EPOLL_CLOEXEC = 0x80000;
    private const int EFD_CLOEXEC = 0x80000;
    private const int EFD_NONBLOCK = 0x800;

    /// <summary>No SIGPIPE on a closed peer (the runtime ignores it, but the flag keeps that from mattering).</summary>
    private const int MSG_NOSIGNAL = 0x4000;

    /// <summary>
    /// <c>struct epoll_event</c> is packed on x86-64 (12 bytes, data at offset 4) and naturally aligned elsewhere (16 bytes,
    /// data at offset 8); the transport only ever stores a 64-bit id in it.
    /// </summary>
    public static readonly int EpollEventSize = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 12 : 16;

    private static readonly int EpollDataOffset = RuntimeInformation.ProcessArchitecture == Architecture.X64 ? 4 : 8;

    public static bool IsSupported => OperatingSystem.IsLinux();

    public static int EpollCreate() => Check(epoll_create1(EPOLL_CLOEXEC));

    public static int EventFdCreate() => Check(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));

    public static void EpollAdd(int epoll, int fd, uint events, ulong id)
    {
        var ev = stackalloc byte[16];
        *(uint*)ev = events;
        *(ulong*)(ev + EpollDataOffset) = id;
        Check(epoll_ctl(epoll, EPOLL_CTL_ADD, fd, ev));
    }

    /// <summary>Waits for events into <paramref name="buffer"/> (<see cref="EpollEventSize"/> bytes each); -1 with errno on error.</summary>
    public static int EpollWait(int epoll, byte* buffer, int maxEvents) => epoll_wait(epoll, buffer, maxEvents, -1);

    /// <summary>Takes the events that are ready now, without waiting; -1 with errno on error.</summary>
    public static int EpollPoll(int epoll, byte* buffer, int maxEvents) => epoll_wait(epoll, buffer, maxEvents, 0);

    /// <summary>Gives the processor to another runnable thread, if there is one (sched_yield cannot fail on Linux).</summary>
    public static void YieldProcessor() => _ = sched_yield();

    public static uint EventMask(byte* buffer, int index) => *(uint*)(buffer + (index * EpollEventSize));

    public static ulong EventId(byte* buffer, int index) => *(ulong*)(buffer + (index * EpollEventSize) + EpollDataOffset);

    public static void EventFdSignal(int fd)
    {
        ulong one = 1;
        _ = write(fd, &one, sizeof(ulong));
    }

    public static void EventFdDrain(int fd)
    {
        ulong value;
        _ = read(fd, &value, sizeof(ulong));
    }

    public static nint Receive(nint fd, byte* buffer, nint length) => recv(fd, buffer, length, 0);

    public static nint Send(nint fd, byte* buffer, nint length) => send(fd, buffer, length, MSG_NOSIGNAL);

    /// <summary><c>struct iovec</c>: base and length, both pointer sized.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct IoVector
    {
        public byte* Base;
        public nint Length;
    }

    public static nint SendVector(nint fd, IoVector* vectors, int count)
    {
        // sendmsg rather than writev: writev has no MSG_NOSIGNAL.
        var message = new MessageHeader { Iov = vectors, IovLength = count };
        return sendmsg(fd, &message, MSG_NOSIGNAL);
    }

    /// <summary><c>struct msghdr</c> (64-bit layout).</summary>
    [StructLayout(LayoutKind.Sequential)]
    private struct MessageHeader
    {
        public void* Name;
        public int NameLength;
        public IoVector* Iov;
        public nint IovLength;
        public void* Control;
        public nint ControlLength;
        public int Flags;
    }

    public static void Close(int fd) => _ = close(fd);

    public static int LastError => Marshal.GetLastPInvokeError();

    /// <summary>The <see cref="SocketError"/> the runtime's sockets would report for an errno (Linux numbering).</summary>
    public static SocketException SocketError(int errno) => new((int)(errno switch
    {
        104 => System.Net.Sockets.SocketError.ConnectionReset,
        32 => System.Net.Sockets.SocketError.Shutdown, // EPIPE
        111 => System.Net.Sockets.SocketError.ConnectionRefused,
        110 => System.Net.Sockets.SocketError.TimedOut,
        113 => System.Net.Sockets.SocketError.HostUnreachable,
        101 => System.Net.Sockets.SocketError.NetworkUnreachable,
        103 => System.Net.Sockets.SocketError.ConnectionAborted,
        107 => System.Net.Sockets.SocketError.NotConnected,
        9 => System.Net.Sockets.SocketError.OperationAborted, // EBADF: closed under us
        EAGAIN => System.Net.Sockets.SocketError.WouldBlock,
        EINPROGRESS => System.Net.Sockets.SocketError.InProgress,
        _ => System.Net.Sockets.SocketError.SocketError,
    }));

    private static int Check(int result) =>
        result >= 0 ? result : throw new SocketException((int)System.Net.Sockets.SocketError.SocketError, $"epoll transport: {Marshal.GetPInvokeErrorMessage(Marshal.GetLastPInvokeError())}");

    [LibraryImport("libc")]
    private static partial int sched_yield();

    [LibraryImport("libc", SetLastError = true)]
    private static partial int epoll_create1(int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int epoll_ctl(int epfd, int op, int fd, byte* ev);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int epoll_wait(int epfd, byte* events, int maxevents, int timeout);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int eventfd(uint initval, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint read(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint write(int fd, void* buf, nint count);

    [LibraryImport("libc", SetLastError = true)]
    private static partial int close(int fd);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint recv(nint fd, byte* buf, nint len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint send(nint fd, byte* buf, nint len, int flags);

    [LibraryImport("libc", SetLastError = true)]
    private static partial nint sendmsg(nint fd, MessageHeader* msg, int flags);
}
