package dev.tilcds.hapi;

import ca.uhn.fhir.batch2.jobs.config.Batch2JobsConfig;
import ca.uhn.fhir.jpa.api.config.ThreadPoolFactoryConfig;
import ca.uhn.fhir.jpa.batch2.JpaBatch2Config;
import ca.uhn.fhir.jpa.config.r4.JpaR4Config;
import ca.uhn.fhir.jpa.subscription.channel.config.SubscriptionChannelConfig;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchClientAutoConfiguration;
import org.springframework.boot.autoconfigure.elasticsearch.ElasticsearchRestClientAutoConfiguration;
import org.springframework.boot.autoconfigure.quartz.QuartzAutoConfiguration;
import org.springframework.boot.autoconfigure.thymeleaf.ThymeleafAutoConfiguration;
import org.springframework.context.annotation.Import;

/**
 * Entry point of the til-cds HAPI FHIR R4 sandbox.
 *
 * <p>A deliberately small JPA server: HAPI's R4 JPA configuration (DAOs, resource
 * providers, the system provider for transactions) plus Batch2 (HAPI's background job
 * framework, needed by $reindex/$expunge style operations) with the in-memory message
 * channels it runs on ({@code SubscriptionChannelConfig}, despite its name; no
 * subscription matching is enabled), and our own wiring in
 * {@link FhirServerConfig}. Subscriptions, MDM, clinical reasoning, IPS, the test-page
 * UI and full-text search are left out so that the server starts fast and stays small.
 *
 * <p>Some Spring Boot auto-configurations are excluded because HAPI's jars merely bring
 * their libraries onto the classpath: Quartz (HAPI runs its own scheduler), Thymeleaf
 * (no web UI here) and the Elasticsearch clients (full-text search is off; otherwise
 * a client would keep trying to reach localhost:9200).
 */
@SpringBootApplication(exclude = {
	QuartzAutoConfiguration.class,
	ThymeleafAutoConfiguration.class,
	ElasticsearchClientAutoConfiguration.class,
	ElasticsearchRestClientAutoConfiguration.class,
})
@Import({
	JpaR4Config.class,
	JpaBatch2Config.class,
	Batch2JobsConfig.class,
	ThreadPoolFactoryConfig.class,
	SubscriptionChannelConfig.class,
})
public class SandboxApplication {

	public static void main(String[] args) {
		SpringApplication.run(SandboxApplication.class, args);
	}
}
