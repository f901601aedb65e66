//! Who is in which channel. Every simulated client belongs to exactly one channel, so a
//! message's expected deliveries are the size of its sender's channel. Sizes are either fixed
//! (`--members M`: channels of M, the last one smaller) or skewed (`--zipf S`: each client
//! picks one of `--channels` channels with probability proportional to 1/rank^S, so a few
//! channels are huge and most are small).

use chat_router::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Membership {
    Fixed { members: usize },
    Zipf { channels: usize, exponent: f64 },
}

#[derive(Debug, Clone)]
pub struct Plan {
    /// The channel of each client.
    pub channel_of: Vec<u32>,
    /// The clients of each channel, in client order. No channel is empty.
    pub members: Vec<Vec<u32>>,
}

impl Plan {
    pub fn new(clients: usize, membership: Membership, seed: u64) -> Plan {
        let raw: Vec<usize> = match membership {
            Membership::Fixed { members } => (0..clients).map(|i| i / members.max(1)).collect(),
            Membership::Zipf { channels, exponent } => {
                let cdf = zipf_cdf(channels.max(1), exponent);
                let mut rng = Rng::new(seed);
                (0..clients)
                    .map(|_| {
                        let u = rng.next_u64() as f64 / u64::MAX as f64;
                        cdf.partition_point(|&c| c < u).min(cdf.len() - 1)
                    })
                    .collect()
            }
        };
        // Renumber so that channels are dense and none is empty.
        let mut renumber = vec![u32::MAX; raw.iter().max().map_or(0, |m| m + 1)];
        let mut members: Vec<Vec<u32>> = Vec::new();
        let mut channel_of = Vec::with_capacity(clients);
        for (client, &c) in raw.iter().enumerate() {
            if renumber[c] == u32::MAX {
                renumber[c] = members.len() as u32;
                members.push(Vec::new());
            }
            channel_of.push(renumber[c]);
            members[renumber[c] as usize].push(client as u32);
        }
        Plan {
            channel_of,
            members,
        }
    }

    pub fn clients(&self) -> usize {
        self.channel_of.len()
    }

    /// How many deliveries one message from `client` should cause (its channel, echo included).
    pub fn fanout_of(&self, client: u32) -> u64 {
        self.members[self.channel_of[client as usize] as usize].len() as u64
    }

    /// Deliveries per message, on average over senders (each client sends equally often).
    pub fn mean_fanout(&self) -> f64 {
        let squares: usize = self.members.iter().map(|m| m.len() * m.len()).sum();
        squares as f64 / self.clients().max(1) as f64
    }

    pub fn largest_channel(&self) -> usize {
        self.members.iter().map(Vec::len).max().unwrap_or(0)
    }
}

pub fn channel_name(channel: u32) -> String {
    format!("c{channel}")
}

pub fn client_name(client: u32) -> String {
    format!("u{client}")
}

fn zipf_cdf(n: usize, exponent: f64) -> Vec<f64> {
    let weights: Vec<f64> = (1..=n).map(|k| 1.0 / (k as f64).powf(exponent)).collect();
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    weights
        .iter()
        .map(|w| {
            acc += w / total;
            acc
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_channels_partition_the_clients() {
        let plan = Plan::new(25, Membership::Fixed { members: 10 }, 1);
        let sizes: Vec<usize> = plan.members.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![10, 10, 5]);
        assert_eq!(plan.channel_of[0], 0);
        assert_eq!(plan.channel_of[24], 2);
        assert_eq!(plan.fanout_of(24), 5);
        assert_eq!(plan.mean_fanout(), (10.0 * 10.0 * 2.0 + 5.0 * 5.0) / 25.0);
    }

    #[test]
    fn zipf_makes_a_few_channels_huge() {
        let plan = Plan::new(
            10_000,
            Membership::Zipf {
                channels: 1000,
                exponent: 1.0,
            },
            7,
        );
        assert_eq!(plan.members.iter().map(Vec::len).sum::<usize>(), 10_000);
        assert!(plan.members.iter().all(|m| !m.is_empty()));
        // Rank 1 of 1000 with s=1 holds 1/H(1000) ~ 13% of the clients.
        let largest = plan.largest_channel();
        assert!((1000..1700).contains(&largest), "largest channel {largest}");
        let mut sizes: Vec<usize> = plan.members.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        assert!(sizes[sizes.len() / 2] < 10, "the median channel is small");
    }

    #[test]
    fn every_client_is_in_the_member_list_of_its_channel() {
        let plan = Plan::new(
            500,
            Membership::Zipf {
                channels: 50,
                exponent: 1.2,
            },
            3,
        );
        for (client, &c) in plan.channel_of.iter().enumerate() {
            assert!(plan.members[c as usize].contains(&(client as u32)));
        }
    }
}
