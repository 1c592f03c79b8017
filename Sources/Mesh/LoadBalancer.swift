/// The pure load-balancing and endpoint-health state of one cluster; the `Cluster` shell owns one behind a lock.
///
/// Time comes in as a parameter and randomness from an injected generator, so tests replay exactly.
public struct LoadBalancer: Sendable {
    /// What the balancer knows about one endpoint.
    public struct EndpointState: Sendable, Equatable {
        public var activeRequests = 0
        /// Set by active health checks; endpoints start healthy so that traffic flows before the first probe.
        public var isHealthy = true
        public var consecutiveProbeFailures = 0
        public var consecutiveProbeSuccesses = 0
        /// Consecutive failures of real traffic, for outlier detection.
        public var consecutiveFailures = 0
        public var ejectedUntil: ContinuousClock.Instant?
        public var ejectionCount = 0
    }

    /// A health change worth logging and counting.
    public enum Event: Sendable, Equatable {
        case becameUnhealthy(endpoint: Int)
        case becameHealthy(endpoint: Int)
        case ejected(endpoint: Int)
        case returned(endpoint: Int)
    }

    public let policy: LoadBalancingPolicy
    public let healthCheck: HealthCheckConfig?
    public let outlierDetection: OutlierDetectionConfig?
    public private(set) var endpoints: [EndpointState]
    private var nextRoundRobin = 0
    private var generator: SplitMix64

    public init(
        endpointCount: Int, policy: LoadBalancingPolicy, healthCheck: HealthCheckConfig? = nil,
        outlierDetection: OutlierDetectionConfig? = nil, seed: UInt64
    ) {
        self.policy = policy
        self.healthCheck = healthCheck
        self.outlierDetection = outlierDetection
        self.endpoints = Array(repeating: EndpointState(), count: endpointCount)
        self.generator = SplitMix64(seed: seed)
    }

    /// Whether the endpoint may receive new traffic at `now`.
    public func isAvailable(_ index: Int, now: ContinuousClock.Instant) -> Bool {
        let state = endpoints[index]
        if !state.isHealthy { return false }
        if let until = state.ejectedUntil, until > now { return false }
        return true
    }

    /// Picks an endpoint for a new request, skipping `excluding` (endpoints that already failed this request).
    /// Returns `nil` when no endpoint is available; the caller answers 503.
    public mutating func pick(now: ContinuousClock.Instant, excluding: Set<Int> = []) -> Int? {
        returnEjected(now: now)
        let candidates = endpoints.indices.filter { !excluding.contains($0) && isAvailable($0, now: now) }
        guard !candidates.isEmpty else { return nil }
        switch policy {
        case .roundRobin:
            for offset in 0..<endpoints.count {
                let index = (nextRoundRobin + offset) % endpoints.count
                if candidates.contains(index) {
                    nextRoundRobin = (index + 1) % endpoints.count
                    return index
                }
            }
            return nil
        case .random:
            return candidates[Int(generator.next() % UInt64(candidates.count))]
        case .leastRequest:
            // Power of two choices: as good as a full scan in practice, and no herd on the one idle endpoint.
            if candidates.count == 1 { return candidates[0] }
            let first = candidates[Int(generator.next() % UInt64(candidates.count))]
            var second = candidates[Int(generator.next() % UInt64(candidates.count - 1))]
            if second == first { second = candidates[candidates.count - 1] }
            return endpoints[second].activeRequests < endpoints[first].activeRequests ? second : first
        }
    }

    public mutating func requestStarted(_ index: Int) {
        endpoints[index].activeRequests += 1
    }

    public mutating func requestFinished(_ index: Int) {
        endpoints[index].activeRequests -= 1
    }

    /// Records the outcome of real traffic (a connect or a response) for outlier detection.
    public mutating func recordOutcome(_ index: Int, success: Bool, now: ContinuousClock.Instant) -> Event? {
        if success {
            endpoints[index].consecutiveFailures = 0
            return nil
        }
        endpoints[index].consecutiveFailures += 1
        guard let outlier = outlierDetection,
            endpoints[index].consecutiveFailures >= outlier.consecutiveFailures,
            endpoints[index].ejectedUntil == nil
        else { return nil }
        let ejected = endpoints.filter { $0.ejectedUntil != nil }.count
        guard (ejected + 1) * 100 <= outlier.maxEjectionPercent * endpoints.count else { return nil }
        endpoints[index].ejectionCount += 1
        // Each repeated ejection lasts longer, as in Envoy, so a flapping endpoint stays out.
        endpoints[index].ejectedUntil = now + outlier.ejectionTime * endpoints[index].ejectionCount
        endpoints[index].consecutiveFailures = 0
        return .ejected(endpoint: index)
    }

    /// Records an active health probe's result.
    public mutating func recordProbe(_ index: Int, success: Bool) -> Event? {
        guard let check = healthCheck else { return nil }
        if success {
            endpoints[index].consecutiveProbeFailures = 0
            endpoints[index].consecutiveProbeSuccesses += 1
            if !endpoints[index].isHealthy && endpoints[index].consecutiveProbeSuccesses >= check.healthyThreshold {
                endpoints[index].isHealthy = true
                return .becameHealthy(endpoint: index)
            }
        } else {
            endpoints[index].consecutiveProbeSuccesses = 0
            endpoints[index].consecutiveProbeFailures += 1
            if endpoints[index].isHealthy && endpoints[index].consecutiveProbeFailures >= check.unhealthyThreshold {
                endpoints[index].isHealthy = false
                return .becameUnhealthy(endpoint: index)
            }
        }
        return nil
    }

    /// Ends ejections whose time is up.
    @discardableResult
    public mutating func returnEjected(now: ContinuousClock.Instant) -> [Event] {
        var events: [Event] = []
        for index in endpoints.indices {
            if let until = endpoints[index].ejectedUntil, until <= now {
                endpoints[index].ejectedUntil = nil
                events.append(.returned(endpoint: index))
            }
        }
        return events
    }
}

/// A small, fast, seedable generator (Steele et al.'s SplitMix64).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
