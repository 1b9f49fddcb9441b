package dev.tilcds.hapi;

import ca.uhn.fhir.batch2.jobs.export.BulkDataExportProvider;
import ca.uhn.fhir.batch2.maintenance.JobMaintenanceServiceImpl;
import ca.uhn.fhir.context.FhirContext;
import ca.uhn.fhir.context.support.IValidationSupport;
import ca.uhn.fhir.jpa.api.IDaoRegistry;
import ca.uhn.fhir.jpa.api.config.JpaStorageSettings;
import ca.uhn.fhir.jpa.api.dao.IFhirSystemDao;
import ca.uhn.fhir.jpa.config.JpaConfig;
import ca.uhn.fhir.jpa.config.util.HapiEntityManagerFactoryUtil;
import ca.uhn.fhir.jpa.config.util.ResourceCountCacheUtil;
import ca.uhn.fhir.jpa.dao.FulltextSearchSvcImpl;
import ca.uhn.fhir.jpa.dao.IFulltextSearchSvc;
import ca.uhn.fhir.jpa.dao.search.HSearchSortHelperImpl;
import ca.uhn.fhir.jpa.dao.search.IHSearchSortHelper;
import ca.uhn.fhir.jpa.model.config.PartitionSettings;
import ca.uhn.fhir.jpa.model.config.SubscriptionSettings;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirH2Dialect;
import ca.uhn.fhir.jpa.model.dialect.HapiFhirPostgresDialect;
import ca.uhn.fhir.jpa.provider.DaoRegistryResourceSupportedSvc;
import ca.uhn.fhir.jpa.provider.JpaCapabilityStatementProvider;
import ca.uhn.fhir.jpa.provider.JpaSystemProvider;
import ca.uhn.fhir.jpa.search.DatabaseBackedPagingProvider;
import ca.uhn.fhir.jpa.search.IStaleSearchDeletingSvc;
import ca.uhn.fhir.jpa.search.StaleSearchDeletingSvcImpl;
import ca.uhn.fhir.jpa.util.ResourceCountCache;
import ca.uhn.fhir.rest.api.EncodingEnum;
import ca.uhn.fhir.rest.api.IResourceSupportedSvc;
import ca.uhn.fhir.rest.server.RestfulServer;
import ca.uhn.fhir.rest.server.provider.ResourceProviderFactory;
import ca.uhn.fhir.rest.server.util.ISearchParamRegistry;
import jakarta.persistence.EntityManagerFactory;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import javax.sql.DataSource;
import org.hl7.fhir.r4.model.Bundle;
import org.hl7.fhir.r4.model.Meta;
import org.springframework.beans.factory.annotation.Qualifier;
import org.springframework.beans.factory.annotation.Value;
import org.springframework.beans.factory.config.BeanPostProcessor;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.boot.autoconfigure.orm.jpa.JpaProperties;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.web.servlet.ServletRegistrationBean;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.orm.jpa.JpaTransactionManager;
import org.springframework.orm.jpa.LocalContainerEntityManagerFactoryBean;
import org.springframework.transaction.annotation.EnableTransactionManagement;

/**
 * The beans HAPI's {@code JpaR4Config} expects its host application to supply, and the
 * FHIR servlet itself.
 *
 * <p>Settings chosen for a test sandbox rather than production:
 * <ul>
 *   <li>search-result caching is off by default, so a search issued right after a write
 *       sees that write (HAPI otherwise reuses an identical search's results for 60 s);
 *   <li>clients may assign any id ({@code PUT Patient/abc}, also inside transactions);
 *   <li>expunge and multiple delete are enabled so tests can reset data.
 * </ul>
 */
@Configuration
@EnableTransactionManagement
@EnableConfigurationProperties(JpaProperties.class)
public class FhirServerConfig {

	/**
	 * Storage behaviour. {@code sandbox.reuse-cached-search-results-millis} left empty
	 * (the default) means "never reuse cached search results".
	 */
	@Bean
	public JpaStorageSettings storageSettings(
			@Value("${sandbox.reuse-cached-search-results-millis:#{null}}") Long reuseCachedMillis,
			@Value("${sandbox.search-prefetch-thresholds:1003,10003,-1}") List<Integer> prefetchThresholds) {
		JpaStorageSettings settings = new JpaStorageSettings();
		settings.setReuseCachedSearchResultsForMillis(reuseCachedMillis);
		// How many results a search loads before its first page answers, then at each next step.
		// HAPI's default first step (13, then 503) makes the second page of a 200-result page
		// run the query again; a patient's searches rarely pass 1,000 results, so one step
		// loads them all and later pages are read from what is already loaded.
		settings.setSearchPreFetchThresholds(prefetchThresholds);
		settings.setResourceClientIdStrategy(JpaStorageSettings.ClientIdStrategyEnum.ANY);
		// ANY client ids require server-assigned ids that cannot collide with them
		settings.setResourceServerIdStrategy(JpaStorageSettings.IdStrategyEnum.UUID);
		settings.setAllowMultipleDelete(true);
		settings.setExpungeEnabled(true);
		settings.setDeleteExpungeEnabled(true);
		// a Bulk Data export's steps follow each other at once, not at the next maintenance pass
		settings.setJobFastTrackingEnabled(true);
		return settings;
	}

	/**
	 * Batch2's maintenance pass (which advances jobs such as a Bulk Data export) runs every
	 * {@code sandbox.batch2-maintenance-millis} instead of HAPI's minute, so an export of a
	 * test's patients finishes in seconds.
	 */
	@Bean
	public static BeanPostProcessor batch2MaintenanceFrequency(
			@Value("${sandbox.batch2-maintenance-millis:2000}") long millis) {
		return new BeanPostProcessor() {
			@Override
			public Object postProcessAfterInitialization(Object bean, String beanName) {
				if (bean instanceof JobMaintenanceServiceImpl maintenance) {
					maintenance.setScheduledJobFrequencyMillis(millis);
				}
				return bean;
			}
		};
	}

	@Bean
	public PartitionSettings partitionSettings() {
		return new PartitionSettings();
	}

	@Bean
	public SubscriptionSettings subscriptionSettings() {
		return new SubscriptionSettings();
	}

	/**
	 * HAPI's persistence unit on the Spring Boot DataSource. {@code spring.jpa.properties.*}
	 * are passed to Hibernate; when no dialect is given, HAPI's own H2 or PostgreSQL
	 * dialect is chosen from {@code spring.datasource.url}.
	 */
	@Bean
	@Primary
	public LocalContainerEntityManagerFactoryBean entityManagerFactory(
			ConfigurableListableBeanFactory beanFactory,
			FhirContext fhirContext,
			JpaStorageSettings storageSettings,
			DataSource dataSource,
			JpaProperties jpaProperties,
			@Value("${spring.datasource.url:}") String datasourceUrl) {
		LocalContainerEntityManagerFactoryBean factory =
				HapiEntityManagerFactoryUtil.newEntityManagerFactory(beanFactory, fhirContext, storageSettings);
		factory.setPersistenceUnitName("HAPI_PU");
		factory.setDataSource(dataSource);

		Map<String, Object> props = new HashMap<>();
		props.put("hibernate.hbm2ddl.auto", "update");
		props.put("hibernate.search.enabled", "false");
		props.put("hibernate.format_sql", "false");
		props.put("hibernate.show_sql", "false");
		props.putAll(jpaProperties.getProperties());
		if (!props.containsKey("hibernate.dialect")) {
			if (datasourceUrl.startsWith("jdbc:postgresql:")) {
				props.put("hibernate.dialect", HapiFhirPostgresDialect.class.getName());
			} else if (datasourceUrl.startsWith("jdbc:h2:")) {
				props.put("hibernate.dialect", HapiFhirH2Dialect.class.getName());
			}
		}
		factory.setJpaPropertyMap(props);
		return factory;
	}

	@Bean
	@Primary
	public JpaTransactionManager transactionManager(EntityManagerFactory entityManagerFactory) {
		return new JpaTransactionManager(entityManagerFactory);
	}

	/** Paging through search results via {@code _getpages} links stored in the database. */
	@Bean
	public DatabaseBackedPagingProvider databaseBackedPagingProvider(
			@Value("${sandbox.default-page-size:20}") int defaultPageSize,
			@Value("${sandbox.max-page-size:500}") int maxPageSize) {
		DatabaseBackedPagingProvider provider = new DatabaseBackedPagingProvider();
		provider.setDefaultPageSize(defaultPageSize);
		provider.setMaximumPageSize(maxPageSize);
		return provider;
	}

	/** Full-text search stays disabled (hibernate.search.enabled=false); HAPI still needs the bean. */
	@Bean
	public IFulltextSearchSvc fullTextSearchSvc() {
		return new FulltextSearchSvcImpl();
	}

	@Bean
	public IHSearchSortHelper hSearchSortHelper(ISearchParamRegistry searchParamRegistry) {
		return new HSearchSortHelperImpl(searchParamRegistry);
	}

	/** Expires stored search results (and their paging cursors) in the background. */
	@Bean
	public IStaleSearchDeletingSvc staleSearchDeletingSvc() {
		return new StaleSearchDeletingSvcImpl();
	}

	@Bean
	public IResourceSupportedSvc resourceSupportedSvc(IDaoRegistry daoRegistry) {
		return new DaoRegistryResourceSupportedSvc(daoRegistry);
	}

	/**
	 * Looked up by name by the capability statement provider; resource counts are
	 * switched off below, so it is never filled.
	 */
	@Bean(name = "myResourceCountsCache")
	public ResourceCountCache resourceCountsCache(IFhirSystemDao<Bundle, Meta> systemDao) {
		return ResourceCountCacheUtil.newResourceCountCache(systemDao);
	}

	/**
	 * The FHIR REST endpoint: every R4 resource type, transactions at the base URL, paging,
	 * and the Bulk Data {@code $export} operations (run as Batch2 jobs, output kept as
	 * Binary resources) that {@code til-cds prescreen --fhir} uses.
	 */
	@Bean
	public RestfulServer restfulServer(
			FhirContext fhirContext,
			ResourceProviderFactory resourceProviderFactory,
			JpaSystemProvider<Bundle, Meta> systemProvider,
			IFhirSystemDao<Bundle, Meta> systemDao,
			JpaStorageSettings storageSettings,
			ISearchParamRegistry searchParamRegistry,
			@Qualifier(JpaConfig.JPA_VALIDATION_SUPPORT_CHAIN) IValidationSupport validationSupport,
			DatabaseBackedPagingProvider pagingProvider,
			BulkDataExportProvider bulkDataExportProvider) {
		RestfulServer server = new RestfulServer(fhirContext);
		server.registerProviders(resourceProviderFactory.createProviders());
		server.registerProvider(systemProvider);
		server.registerProvider(bulkDataExportProvider);
		server.setPagingProvider(pagingProvider);
		server.setDefaultResponseEncoding(EncodingEnum.JSON);
		JpaCapabilityStatementProvider capabilities = new JpaCapabilityStatementProvider(
				server, systemDao, storageSettings, searchParamRegistry, validationSupport);
		capabilities.setImplementationDescription("til-cds HAPI FHIR sandbox");
		// counting every resource type on each /metadata call is wasted work for tests
		capabilities.setIncludeResourceCounts(false);
		server.setServerConformanceProvider(capabilities);
		return server;
	}

	@Bean
	public ServletRegistrationBean<RestfulServer> fhirServlet(RestfulServer restfulServer) {
		ServletRegistrationBean<RestfulServer> registration =
				new ServletRegistrationBean<>(restfulServer, "/fhir/*");
		registration.setName("fhir");
		registration.setLoadOnStartup(1);
		return registration;
	}
}
