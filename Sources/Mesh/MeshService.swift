import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle

/// Runs a `MeshProxy` as a service: starts it, waits for graceful shutdown (SIGTERM/SIGINT), then drains it.
public struct MeshService: Service {
    public let proxy: MeshProxy
    public let drainTime: Duration

    public init(proxy: MeshProxy, drainTime: Duration = .seconds(10)) {
        self.proxy = proxy
        self.drainTime = drainTime
    }

    public func run() async throws {
        try await proxy.start()
        try? await gracefulShutdown()
        await proxy.shutdown(drainTime: drainTime)
    }
}
