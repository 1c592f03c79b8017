import Mesh
import Testing

@Suite struct LoadBalancerTests {
    let start = ContinuousClock.now

    @Test func roundRobinCyclesAndSkipsUnavailable() {
        var balancer = LoadBalancer(
            endpointCount: 3, policy: .roundRobin, healthCheck: HealthCheckConfig(kind: .tcp, unhealthyThreshold: 1), seed: 1)
        #expect((0..<6).map { _ in balancer.pick(now: start)! } == [0, 1, 2, 0, 1, 2])
        #expect(balancer.recordProbe(1, success: false) == .becameUnhealthy(endpoint: 1))
        #expect((0..<4).map { _ in balancer.pick(now: start)! } == [0, 2, 0, 2])
        #expect(balancer.pick(now: start, excluding: [0, 2]) == nil)
    }

    @Test func leastRequestPrefersTheLessLoaded() {
        var balancer = LoadBalancer(endpointCount: 2, policy: .leastRequest, seed: 7)
        for _ in 0..<5 { balancer.requestStarted(0) }
        #expect((0..<20).allSatisfy { _ in balancer.pick(now: start) == 1 })
    }

    @Test func randomIsSeededAndCoversAll() {
        var first = LoadBalancer(endpointCount: 4, policy: .random, seed: 42)
        var second = LoadBalancer(endpointCount: 4, policy: .random, seed: 42)
        let picks = (0..<200).map { _ in first.pick(now: start)! }
        #expect(picks == (0..<200).map { _ in second.pick(now: start)! })
        #expect(Set(picks) == [0, 1, 2, 3])
    }

    @Test func outlierEjectionAndReturn() {
        let outlier = OutlierDetectionConfig(consecutiveFailures: 2, ejectionTime: .seconds(10), maxEjectionPercent: 50)
        var balancer = LoadBalancer(endpointCount: 2, policy: .roundRobin, outlierDetection: outlier, seed: 1)
        #expect(balancer.recordOutcome(0, success: false, now: start) == nil)
        #expect(balancer.recordOutcome(0, success: false, now: start) == .ejected(endpoint: 0))
        #expect(!balancer.isAvailable(0, now: start + .seconds(9)))
        // The cap: ejecting the second endpoint too would leave the cluster with nothing.
        _ = balancer.recordOutcome(1, success: false, now: start)
        #expect(balancer.recordOutcome(1, success: false, now: start) == nil)
        #expect(balancer.pick(now: start + .seconds(5)) == 1)
        #expect(balancer.returnEjected(now: start + .seconds(10)) == [.returned(endpoint: 0)])
        #expect(balancer.isAvailable(0, now: start + .seconds(10)))
    }

    @Test func probesNeedThresholdsBothWays() {
        var balancer = LoadBalancer(
            endpointCount: 1, policy: .roundRobin,
            healthCheck: HealthCheckConfig(kind: .tcp, unhealthyThreshold: 2, healthyThreshold: 2), seed: 1)
        #expect(balancer.recordProbe(0, success: false) == nil)
        #expect(balancer.recordProbe(0, success: false) == .becameUnhealthy(endpoint: 0))
        #expect(balancer.pick(now: start) == nil)
        #expect(balancer.recordProbe(0, success: true) == nil)
        #expect(balancer.recordProbe(0, success: true) == .becameHealthy(endpoint: 0))
        #expect(balancer.pick(now: start) == 0)
    }
}
